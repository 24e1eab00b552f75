"""Safety-critical neurons on SmolLM2-135M: alignment, prune check, frozen fine-tunes and score dynamics.

Runs (or resumes) `personactl safety run --out runs/safety` and writes its tables to docs/experiments.md.
Run: .venv/bin/python experiments/safety_neurons.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _doc import write_section
from personactl.safety import run_safety
from personactl.safety.report import tables

RUN = Path("runs/safety")


def _without_answers(results: dict) -> dict:
    """The numbers only (answers and per-matrix rows stay in the run folder)."""
    def strip(measure: dict) -> dict:
        return {k: v for k, v in measure.items() if k not in ("answers", "flags")}

    align = {k: {m: strip(v) if isinstance(v, dict) else v for m, v in results["align"][k].items()} for k in ("before", "after")}
    prune = {n: {**v, "refusal": strip(v["refusal"])} for n, v in results["prune_check"]["variants"].items()}
    finetunes = {n: {"refusal": strip(f["refusal"]), "over_refusal": f["over_refusal"], "overall": f["scores"]["overall"],
                     "per_block": f["scores"]["per_block"], "verdict": f["scores"]["verdict"]} for n, f in results["finetunes"].items()}
    return {"align": align, "identify": {k: v for k, v in results["identify"].items() if k != "per_matrix"}, "prune_check": prune, "finetunes": finetunes}


def masked_entries_moved(run: Path) -> dict[str, int]:
    """How many set-difference entries each full fine-tune changed, against the aligned model (frozen must be 0)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    masks, aligned = load_file(str(run / "identify" / "masks.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    moved = {}
    for folder in sorted((run / "finetune").glob("full-*")):
        tuned = load_file(str(folder / "model.safetensors"))
        moved[folder.name] = sum(int((tuned[f"{n}.weight"][m] != aligned[f"{n}.weight"][m]).sum()) for n, m in masks.items())
    return moved


def main() -> None:
    start = time.perf_counter()
    results = run_safety("smollm2-135m", RUN)
    data = _without_answers(results)
    (align, _), (prune, _), (finetunes, _) = tables(results).values()
    moved = masked_entries_moved(RUN)
    identify = results["identify"]
    write_section("safety_align", "Safety neurons 1: aligning SmolLM2-135M to refuse (held-out requests)", align,
                  "48 held-out harmful requests (refusal) and 48 held-out benign ones (over-refusal, 12 of them alarming-sounding); "
                  "greedy answers of 48 tokens; rates by the phrase matcher with bootstrap 95% CIs; the embedding classifier's rate "
                  "and its agreement with the phrase matcher beside it.", data={"align": data["align"]})
    write_section("safety_prune", "Safety neurons 2: prune check (weights zeroed, restored after)", prune,
                  f"Set difference = top {100 * identify['settings']['sparsity']:g}% by safety Wanda score minus top "
                  f"{100 * identify['settings']['utility_sparsity']:g}% by utility score, per matrix ({identify['masked']} weights, "
                  f"{100 * identify['fraction']:.2f}%); random = the same count per matrix; safety only = top "
                  f"{100 * identify['settings']['sparsity']:g}% by safety score ({identify['safety_only']} weights).",
                  data={"identify": data["identify"], "prune_check": data["prune_check"]})
    write_section("safety_dynamics", "Safety neurons 3: utility fine-tuning with frozen weights, and Wanda score dynamics", finetunes,
                  "One epoch on the 128 benign training examples. Score change = mean over weight matrices of the relative change "
                  "of the mean safety Wanda score of that set (frozen = the set-difference mask, random = a random mask of the same "
                  "size, others = every weight not frozen), bootstrap 95% CI over matrices. Verdict A: the CI lies below -10%; "
                  "B: inside ±5%; otherwise neither. With LoRA the base weights are frozen anyway, so the three LoRA "
                  "rows are the same fine-tune (same seed): a mask changes nothing there. Masked entries changed by each full "
                  f"fine-tune: {', '.join(f'{n} {c}' for n, c in moved.items())} (of {identify['masked']}).",
                  data={"finetunes": data["finetunes"], "masked_entries_moved": moved})
    print(f"wrote docs/experiments.md ({time.perf_counter() - start:.0f} s, resumed steps included)", file=sys.stderr)


if __name__ == "__main__":
    main()
