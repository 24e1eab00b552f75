"""Cross-model transfer of the pirate persona, SmolLM2-135M -> Gemma3-270M, and its section of docs/experiments.md.

Runs `personactl transfer run --config experiments/transfer_pirate.json` (every step is cached in the
output folder, so a second call only re-reads) and tabulates every method at every alpha, the success
criteria and the three diagnostics.

--without-pirate-text is the corpus ablation: the shipped corpus holds the pirate_coder persona's
answers, so the map has seen pirate-styled text; this variant fits it on the same corpus without them
(same number of pairs, its own output folder and section).

Run: .venv/bin/python experiments/transfer_pirate.py [--without-pirate-text]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from _doc import write_section

from personactl.transfer.config import TransferConfig, load_config
from personactl.transfer.paired import LEVEL, MIN_COHERENCE, picked_on
from personactl.transfer.pairs import builtin_texts
from personactl.transfer.runner import run_transfer

CONFIG = Path(__file__).with_name("transfer_pirate.json")


def _ci(row: dict) -> str:
    return f"{row['trait']:.1f} [{row['trait_lo']:.1f}, {row['trait_hi']:.1f}]"


def without_pirate_text(config: TransferConfig) -> TransferConfig:
    """The config with its own output folder and a texts file: the shipped corpus less pirate_coder's answers."""
    persona = resources.files("personactl") / "data" / "personas" / "pirate_coder.jsonl"
    pirate = {json.loads(line)["output"].strip() for line in persona.read_text(encoding="utf-8").splitlines() if line.strip()}
    out = Path(config.output_dir + "-without-pirate-text")
    out.mkdir(parents=True, exist_ok=True)
    texts = out / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in builtin_texts() if t not in pirate), encoding="utf-8")
    return config.model_copy(update={"output_dir": str(out), "texts": str(texts)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without-pirate-text", action="store_true", help="fit the map on the corpus less pirate_coder's answers")
    args = parser.parse_args()
    config = load_config(CONFIG)
    if args.without_pirate_text:
        config = without_pirate_text(config)
    start = time.perf_counter()
    (result,) = run_transfer(config)
    seconds = time.perf_counter() - start
    rows = [
        {
            "method": r["method"],
            "alpha": f"{r['coef']:g}",
            "norm": f"{r['applied_norm']:.0f}",
            "trait": _ci(r),
            "coherence": f"{r['coherence']:.1f}",
            "collapsed": f"{100 * r['collapse_rate']:.0f}%",
        }
        for r in result.rows
        if r["group"] == "main"
    ]
    criteria = "; ".join(f"{c['criterion']}: {c['said']} ({c['verdict']})" for c in result.criteria)
    scales = ", ".join(f"{s:g}" for s in sorted({*config.magnitude_scales, *config.alpha_values}))
    note = (
        f"Layer {result.source_layer} -> {result.target_layer}; {config.n_test_prompts} held-out questions, greedy, "
        f"{config.max_new_tokens} tokens; offline judge fitted on Gemma's own contrastive answers; brackets: 95% CIs over questions; "
        f"norm = alpha x the method's vector norm. This call took {seconds:.0f} s (cached steps are re-read). "
        f"Wherever an alpha, norm or layer is chosen, it is the best coherent one (coherence >= {MIN_COHERENCE:g}) on one half "
        f"of the questions, scored on the other half, both ways; two conditions are compared per question (paired "
        f"t-test on per-question means, two-sided, level {LEVEL:g}; where a pick rests on the same questions, its standard "
        f"error is a leave-one-question-out jackknife that re-makes the picks). "
        f"Criteria (ridge at alpha {result.criteria[0]['alpha']}, picked on questions {picked_on(result.criteria[0]['picks'])}): "
        f"{criteria}. Diagnostic A applies the ridge direction and the oracle at {scales} x the oracle norm. "
        + " ".join(f"{k.upper()}: {h['conclusion']}." for k, h in result.hypotheses.items())
    )
    if args.without_pirate_text:
        note = "Corpus: the shipped texts less the pirate_coder persona's answers. " + note
        print(
            write_section(
                "transfer_pirate_without_pirate_text", "Cross-model transfer without pirate-styled text in the corpus (ablation)", rows, note
            )
        )
    else:
        print(write_section("transfer_pirate", "Cross-model transfer: pirate, SmolLM2-135M -> Gemma3-270M", rows, note))


if __name__ == "__main__":
    main()
