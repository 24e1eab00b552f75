"""Expressibility on the built-in traits: does SmolLM2 express each trait, and does steering then move it?

For every built-in trait: the contrastive answers of the demo's extraction (12
questions x the trait's instruction pairs, greedy), the offline judge's
out-of-fold AUROC, accuracy and score gap, the best projection AUROC, and the
measured steering effect (judged trait at coefficient 2 minus at 0, best over
the candidate layers, on 4 extraction questions the vector did not use). The
same verdict from the first 6 questions only (what a quick `extract --check`
sees) shows how stable it is. A placebo trait, whose positive and negative
instructions say the same thing in other words, is the control: nothing can
be expressed, so its verdict must be "not expressed". The thresholds in
personactl/expressibility.py are read off this table. Writes a section of
docs/experiments.md; a rerun reuses the traits already in its JSON.

Run: .venv/bin/python experiments/expressibility.py
"""

from __future__ import annotations

import json
import time

from _doc import DOC, write_section
from personactl import Trait, builtin_traits, load_model, load_trait
from personactl.expressibility import EXPRESSED_AUROC, auroc_lower_bound, level_of
from personactl.extraction import ExtractionSettings, assess_pairs, check
from personactl.judges.factory import make_judges
from personactl.layer_selection import PROBE_COEF, default_candidates, measure_effects, probe_questions
from personactl.methods import GenerationSettings

N_QUESTIONS, QUICK = 12, 6


def main() -> None:
    backbone = load_model("smollm2-135m")
    saved = DOC.parent / "experiments" / "expressibility.json"
    measured = json.loads(saved.read_text())["measured"] if saved.exists() else {}
    for trait in [load_trait(name) for name in builtin_traits()] + [placebo()]:
        if trait.name not in measured:
            measured[trait.name] = measure(backbone, trait)
            print(row_of(measured[trait.name]), flush=True)
    rows = [row_of(m) for m in measured.values()]
    agree = sum((r["verdict"] == "not expressed") == (r[f"first {QUICK} questions"] == "not expressed") for r in rows)
    note = (
        f"SmolLM2-135M-Instruct, offline judge, greedy answers of {N_QUESTIONS} extraction questions per instruction pair. "
        "Judge AUROC, accuracy and gap (mean score of positive minus negative answers, 0-100) are out of fold (5 folds); "
        "the AUROC's CI is Hanley & McNeil's. "
        f"Steering effect: judged trait at coefficient {PROBE_COEF:g} minus at 0 on 4 unused extraction questions, the best of "
        f"the candidate layers (read it only where the judge separates the trait). Threshold set from this table: "
        f"expressed at judge AUROC >= {EXPRESSED_AUROC:.2f}, strongly when the CI's lower end is above it too. "
        f"The first {QUICK} questions alone (what `extract --check` uses by default) give the same expressed / not expressed "
        f"answer for {agree} of {len(rows)} traits. "
        f"Check seconds: answers + activations + judge for {N_QUESTIONS} questions on 2 cores, other jobs running."
    )
    print(write_section("expressibility", "Expressibility of the built-in traits on SmolLM2 (the verdict's threshold)", rows, note,
                        {"measured": measured}))


def measure(backbone, trait: Trait) -> dict:
    """The check on `trait`, the check on its first questions only, and the steering effect per candidate layer."""
    start = time.perf_counter()
    verdict, vector, pairs = check(backbone, trait, ExtractionSettings(n_questions=N_QUESTIONS))
    seconds = time.perf_counter() - start
    quick_questions = set(trait.questions[:QUICK])
    quick = assess_pairs(trait.name, [p for p in pairs if p.question in quick_questions])
    judges = make_judges("embed", trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs])
    questions, _ = probe_questions(trait.questions, N_QUESTIONS)
    effects = measure_effects(backbone, vector, judges, questions, default_candidates(backbone.n_layers), PROBE_COEF,
                              GenerationSettings(temperature=0.0))
    return {"trait": trait.name, "verdict": verdict.to_dict(), "quick_auroc": quick.auroc if quick else None,
            "quick_pairs": quick.n_pairs if quick else 0, "effects": {str(k): v for k, v in effects.items()}, "seconds": seconds}


def row_of(m: dict) -> dict:
    """A table row, its verdict recomputed from the measured AUROC (so a changed rule needs no new run)."""
    v = m["verdict"]
    lo = auroc_lower_bound(v["auroc"], v["n_pairs"], v["n_pairs"])
    quick_lo = auroc_lower_bound(m["quick_auroc"], m["quick_pairs"], m["quick_pairs"]) if m["quick_auroc"] is not None else None
    layer, (effect, coherence) = max(m["effects"].items(), key=lambda item: item[1][0])
    return {
        "trait": m["trait"], "pairs": v["n_pairs"], "judge AUROC": v["auroc"], "CI from": lo, "accuracy": v["accuracy"], "gap": v["gap"],
        "verdict": level_of(v["auroc"], lo), f"first {QUICK} questions": None if quick_lo is None else level_of(m["quick_auroc"], quick_lo),
        "projection AUROC": v["projection_auroc"], "steering effect at +2": effect, "at layer": int(layer),
        "coherence there": coherence, "check seconds": m["seconds"],
    }


def placebo() -> Trait:
    """The control: pirate's questions, with positive and negative instructions that ask for the same thing."""
    pirate = load_trait("pirate")
    same = [
        ("Answer the user's question.", "Reply to the question the user asks."),
        ("Give a helpful answer.", "Be helpful in your reply."),
        ("Respond to the question below.", "Answer what is asked below."),
        ("Write a short, clear reply.", "Keep your reply short and clear."),
        ("Help the user with their question.", "Assist the user with what they ask."),
    ]
    return Trait.model_validate({
        **pirate.model_dump(), "name": "placebo", "description": "a control: both instructions ask for the same thing",
        "instructions": [{"pos": pos, "neg": neg} for pos, neg in same],
    })


if __name__ == "__main__":
    main()
