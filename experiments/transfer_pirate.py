"""Cross-model transfer of the pirate persona, SmolLM2-135M -> Gemma3-270M, and its section of docs/experiments.md.

Runs `personactl transfer run --config experiments/transfer_pirate.json` (every step is cached in the
output folder, so a second call only re-reads) and tabulates every method at every alpha, the success
criteria and the three diagnostics.

Run: .venv/bin/python experiments/transfer_pirate.py
"""

from __future__ import annotations

import time
from pathlib import Path

from _doc import write_section
from personactl.transfer.config import load_config
from personactl.transfer.runner import run_transfer

CONFIG = Path(__file__).with_name("transfer_pirate.json")


def _ci(row: dict) -> str:
    return f"{row['trait']:.1f} [{row['trait_lo']:.1f}, {row['trait_hi']:.1f}]"


def main() -> None:
    config = load_config(CONFIG)
    start = time.perf_counter()
    (result,) = run_transfer(config)
    seconds = time.perf_counter() - start
    rows = [{"method": r["method"], "alpha": f"{r['coef']:g}", "norm": f"{r['applied_norm']:.0f}", "trait": _ci(r),
             "coherence": f"{r['coherence']:.1f}", "collapsed": f"{100 * r['collapse_rate']:.0f}%"}
            for r in result.rows if r["group"] == "main"]
    criteria = "; ".join(f"{c['criterion']}: {c['measured']:.2f}" + ("" if c["met"] is None else f" ({'met' if c['met'] else 'not met'})")
                         for c in result.criteria)
    note = (f"Layer {result.source_layer} -> {result.target_layer}; {config.n_test_prompts} held-out questions, greedy, "
            f"{config.max_new_tokens} tokens; offline judge fitted on Gemma's own contrastive answers; brackets: bootstrap 95% CIs; "
            f"norm = alpha x the method's vector norm. This call took {seconds:.0f} s (cached steps are re-read). "
            f"Criteria (ridge at its best coherent alpha): {criteria}. "
            + " ".join(f"{k.upper()}: {h['conclusion']}." for k, h in result.hypotheses.items()))
    print(write_section("transfer_pirate", "Cross-model transfer: pirate, SmolLM2-135M -> Gemma3-270M", rows, note))


if __name__ == "__main__":
    main()
