"""Safety-critical neurons on SmolLM2-135M: alignment, prune check, frozen fine-tunes and score dynamics.

Runs (or resumes) `personactl safety run --out runs/safety` and writes its tables to docs/experiments.md.
Run: .venv/bin/python experiments/safety_neurons.py
With --from-json docs/experiments it loads no model: the rates' counts and the
per-block score changes stored in the three sections' JSON get their intervals
and verdicts again from the current code, and the sections are rewritten (after
a change to the statistics, not to the measurements).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _doc import write_section

from personactl.intervals import t_interval
from personactl.safety import run_safety, verdict
from personactl.safety.refusal import wilson
from personactl.safety.report import collapse_rate, tables

RUN = Path("runs/safety")
RATES = ("keyword", "embedding", "collapsed")


def _numbers(measure: dict) -> dict:
    """A measure without its answers (they stay in the run folder)."""
    return {k: v for k, v in measure.items() if k not in ("answers", "flags")}


def _refusal_numbers(measure: dict) -> dict:
    """A refusal measure without its answers, their collapse share kept as a rate."""
    return {**_numbers(measure), "collapsed": collapse_rate(measure)}


def _without_answers(results: dict) -> dict:
    """The numbers only (answers and per-matrix rows stay in the run folder)."""
    align = {
        k: {m: (_refusal_numbers(v) if m == "refusal" else _numbers(v)) if isinstance(v, dict) else v for m, v in results["align"][k].items()}
        for k in ("before", "after")
    }
    prune = {n: {**v, "refusal": _refusal_numbers(v["refusal"])} for n, v in results["prune_check"]["variants"].items()}
    finetunes = {
        n: {
            "refusal": _refusal_numbers(f["refusal"]),
            "over_refusal": f["over_refusal"],
            "overall": f["scores"]["overall"],
            "per_block": f["scores"]["per_block"],
            "verdict": f["scores"]["verdict"],
        }
        for n, f in results["finetunes"].items()
    }
    return {
        "align": align,
        "identify": {k: v for k, v in results["identify"].items() if k != "per_matrix"},
        "prune_check": prune,
        "finetunes": finetunes,
    }


def _with_wilson(measure: dict) -> dict:
    """A stored measure whose rates get their Wilson intervals from their counts (rate x n answers)."""
    return {k: wilson(round(v["rate"] * v["n"]), v["n"]).to_dict() if k in RATES else v for k, v in measure.items()}


def _overall(per_block: dict, stored: dict) -> dict:
    """Overall changes from the stored block means: Student's t over the blocks, as `dynamics.change_ci` gives over the
    matrices (a block's mean is its matrices' mean). The means must be the stored ones, else a matrix is missing."""
    overall = {}
    for key, old in stored.items():
        mean, low, high = t_interval([block[key] for block in per_block.values()])
        if abs(mean - old["mean"]) > 1e-9:
            raise SystemExit(f"the stored blocks give a {key} of {mean:.6f}, not the stored {old['mean']:.6f}: rerun the study")
        overall[key] = {"mean": mean, "low": low, "high": high, "matrices": old["matrices"], "blocks": len(per_block)}
    return overall


def from_json(folder: Path) -> tuple[dict, dict[str, int]]:
    """The study's results as `run_safety` returns them, answers left out, from the three sections' stored JSON, with
    the current intervals and verdicts; and the masked entries each full fine-tune moved."""
    align, prune, dynamics = (json.loads((folder / f"safety_{n}.json").read_text()) for n in ("align", "prune", "dynamics"))
    finetunes = {}
    for name, f in dynamics["finetunes"].items():
        overall = _overall(f["per_block"], f["overall"])
        frozen = overall["frozen_mean"]
        finetunes[name] = {
            "refusal": _with_wilson(f["refusal"]),
            "over_refusal": _with_wilson(f["over_refusal"]),
            "scores": {"overall": overall, "per_block": f["per_block"], "verdict": verdict(frozen["mean"], frozen["low"], frozen["high"])},
        }
    results = {
        "align": {k: {m: _with_wilson(v) if isinstance(v, dict) else v for m, v in align["align"][k].items()} for k in ("before", "after")},
        "identify": prune["identify"],
        "prune_check": {"variants": {n: {**v, "refusal": _with_wilson(v["refusal"])} for n, v in prune["prune_check"].items()}},
        "finetunes": finetunes,
    }
    return results, dynamics["masked_entries_moved"]


def masked_entries_moved(run: Path) -> dict[str, int]:
    """How many set-difference entries each full fine-tune changed, against the aligned model (frozen must be 0)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    masks, aligned = load_file(str(run / "identify" / "masks.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    moved = {}
    for folder in sorted((run / "finetune").glob("full-*")):
        tuned = load_file(str(folder / "model.safetensors"))
        moved[folder.name] = sum(int((tuned[f"{n}.weight"][m] != aligned[f"{n}.weight"][m]).sum()) for n, m in masks.items())
    return moved


def write(results: dict, moved: dict[str, int]) -> None:
    """The three sections of docs/experiments.md and their JSON."""
    data = _without_answers(results)
    (align, _), (prune, _), (finetunes, _) = tables(results).values()
    identify = results["identify"]
    blocks = next(iter(results["finetunes"].values()))["scores"]["overall"]["frozen_mean"]["blocks"]
    write_section(
        "safety_align",
        "Safety neurons 1: aligning SmolLM2-135M to refuse (held-out requests)",
        align,
        "48 held-out harmful requests (refusal) and 48 held-out benign ones (over-refusal, 12 of them alarming-sounding); "
        "greedy answers of 48 tokens; rates by the phrase matcher with Wilson score 95% CIs (each answer one independent "
        "trial); the embedding classifier's rate and its agreement with the phrase matcher beside it.",
        data={"align": data["align"]},
    )
    write_section(
        "safety_prune",
        "Safety neurons 2: prune check (weights zeroed, restored after)",
        prune,
        f"Set difference = top {100 * identify['settings']['sparsity']:g}% by safety Wanda score minus top "
        f"{100 * identify['settings']['utility_sparsity']:g}% by utility score, per matrix ({identify['masked']} weights, "
        f"{100 * identify['fraction']:.2f}%); random = the same count per matrix; safety only = top "
        f"{100 * identify['settings']['sparsity']:g}% by safety score ({identify['safety_only']} weights). Rates with "
        "Wilson score 95% CIs, as in part 1.",
        data={"identify": data["identify"], "prune_check": data["prune_check"]},
    )
    write_section(
        "safety_dynamics",
        "Safety neurons 3: utility fine-tuning with frozen weights, and Wanda score dynamics",
        finetunes,
        "One epoch on the 128 benign training examples. Score change = relative change of the mean safety Wanda score of "
        "that set in each weight matrix (frozen = the set-difference mask, random = a random mask of the same size, "
        f"others = every weight not frozen), averaged over the matrices of each block, then over the {blocks} blocks; "
        "95% CI: Student's t over the block means (the matrices of one block read the same inputs, so their scores move "
        "together). Verdict A: the CI lies below -10%; B: inside ±5%; otherwise neither. With LoRA the base weights are "
        "frozen anyway, so the three LoRA rows are the same fine-tune (same seed): a mask changes nothing there. Masked "
        f"entries changed by each full fine-tune: {', '.join(f'{n} {c}' for n, c in moved.items())} (of {identify['masked']}).",
        data={"finetunes": data["finetunes"], "masked_entries_moved": moved},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-json",
        type=Path,
        help="a folder holding safety_align.json, safety_prune.json and safety_dynamics.json: recompute their statistics without a model",
    )
    args = parser.parse_args()
    if args.from_json:
        write(*from_json(args.from_json))
        return
    start = time.perf_counter()
    write(run_safety("smollm2-135m", RUN), masked_entries_moved(RUN))
    print(f"wrote docs/experiments.md ({time.perf_counter() - start:.0f} s, resumed steps included)", file=sys.stderr)


if __name__ == "__main__":
    main()
