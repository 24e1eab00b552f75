"""Expressibility on the built-in traits: does SmolLM2 express each trait, and does steering then move it?

For every built-in trait: the contrastive answers of the demo's extraction (12
questions x the trait's instruction pairs, greedy), the offline judge's
out-of-fold AUROC (every answer of a held-out question held out together) with
its 95% CI clustered by question, accuracy and score gap, the best projection
AUROC, and the measured steering effect (judged trait at coefficient 2 minus at
0, best over the candidate layers, on 4 extraction questions the vector did not
use). The same verdict from the first 6 questions only (what a quick `extract
--check` sees) shows how stable it is.

Placebo controls, where nothing can be expressed, so the verdict must be "not
expressed" with a CI that covers 0.5: two traits whose positive and negative
instructions say the same thing in other words (on pirate's and on silly's
questions), and the real answers of pirate and silly with each pair's labels
swapped at random. The threshold in personactl/expressibility.py must sit above
every placebo's upper CI end. Writes a section of docs/experiments.md; a rerun
reuses the traits already in its JSON (delete it after changing the estimator).

Run: .venv/bin/python experiments/expressibility.py
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from _doc import DOC, write_section

from personactl import Trait, builtin_traits, load_model, load_trait
from personactl._io import write_text_atomic
from personactl.expressibility import EXPRESSED_AUROC
from personactl.extraction import ContrastivePair, ExtractionSettings, assess_pairs, check, question_groups
from personactl.judges.factory import make_judges
from personactl.layer_selection import PROBE_COEF, default_candidates, measure_effects, probe_questions
from personactl.methods import GenerationSettings

N_QUESTIONS, QUICK = 12, 6


def main() -> None:
    backbone = load_model("smollm2-135m")
    saved = DOC.parent / "experiments" / "expressibility.json"
    measured = json.loads(saved.read_text())["measured"] if saved.exists() else {}
    partial = Path("runs/expressibility-measured.json")  # each trait kept as it finishes, so a killed run resumes
    partial.parent.mkdir(parents=True, exist_ok=True)
    measured.update(json.loads(partial.read_text()) if partial.exists() else {})
    first = ["pirate", "silly"]  # the expressed traits and the placebos first: the threshold rests on them
    names = first + [name for name in builtin_traits() if name not in first]
    traits = [load_trait(first[0]), load_trait(first[1]), placebo("placebo", "pirate"), placebo("placebo-silly", "silly")]
    traits += [load_trait(name) for name in names[2:]]
    for trait in traits:
        if trait.name not in measured:
            measured[trait.name] = measure(backbone, trait)
            write_text_atomic(partial, json.dumps(measured))
            print(*rows_of(measured[trait.name]), sep="\n", flush=True)
    rows = [row for m in measured.values() for row in rows_of(m)]
    agree = sum((r["verdict"] == "not expressed") == (r[f"first {QUICK} questions"] == "not expressed") for r in rows)
    placebo_rows = [r for r in rows if r["trait"].startswith("placebo") or "shuffled" in r["trait"]]
    top = max(r["CI to"] for r in placebo_rows)
    placebo_list = ", ".join("{trait} {judge AUROC:.2f} [{CI from:.2f}, {CI to:.2f}]".format_map(r) for r in placebo_rows)
    note = (
        f"SmolLM2-135M-Instruct, offline judge, greedy answers of {N_QUESTIONS} extraction questions per instruction pair. "
        "Judge AUROC, accuracy and gap (mean score of positive minus negative answers, 0-100) are out of fold by question "
        "(2 folds; all answers of a question held out together). The AUROC compares answers to the same question (the "
        "share of positive-negative pairs the judge orders right, averaged over questions); its 95% CI is Student's t "
        "over the per-question AUROCs within each fold, the folds' standard errors averaged (their scores come from "
        "classifiers trained on each other's labels, so they correlate). "
        f"Placebos (same instruction in other words; real answers with each pair's labels swapped at random): "
        f"{placebo_list}; "
        f"the highest placebo upper end is {top:.2f}, below the threshold {EXPRESSED_AUROC:.2f} "
        f"(expressed at judge AUROC >= {EXPRESSED_AUROC:.2f}, strongly when the CI's lower end is above it too). "
        f"Steering effect: judged trait at coefficient {PROBE_COEF:g} minus at 0 on 4 unused extraction questions, the best of "
        f"the candidate layers (read it only where the judge separates the trait). "
        f"The first {QUICK} questions alone (the old `extract --check` default; it now uses {N_QUESTIONS}) give the same "
        f"expressed / not expressed answer for {agree} of {len(rows)} rows. "
        f"Check seconds: answers + activations + judge for {N_QUESTIONS} questions on 2 cores, other jobs running."
    )
    print(
        write_section(
            "expressibility", "Expressibility of the built-in traits on SmolLM2 (the verdict's threshold)", rows, note, {"measured": measured}
        )
    )


def measure(backbone, trait: Trait) -> dict:
    """The check on `trait`, the check on its first questions only, and the steering effect per candidate layer."""
    start = time.perf_counter()
    verdict, vector, pairs = check(backbone, trait, ExtractionSettings(n_questions=N_QUESTIONS))
    seconds = time.perf_counter() - start
    quick_questions = set(trait.questions[:QUICK])
    quick = assess_pairs(trait.name, [p for p in pairs if p.question in quick_questions])
    judges = make_judges("embed", trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs], question_groups(pairs))
    questions, _ = probe_questions(trait.questions, N_QUESTIONS)
    effects = measure_effects(
        backbone, vector, judges, questions, default_candidates(backbone.n_layers), PROBE_COEF, GenerationSettings(temperature=0.0)
    )
    shuffled = assess_pairs(f"{trait.name} shuffled", swapped_at_random(pairs)) if trait.name in SHUFFLED else None
    return {
        "trait": trait.name,
        "verdict": verdict.to_dict(),
        "quick": quick.to_dict() if quick else None,
        "effects": {str(k): v for k, v in effects.items()},
        "seconds": seconds,
        "shuffled": shuffled.to_dict() if shuffled else None,
    }


def swapped_at_random(pairs: list[ContrastivePair], seed: int = 0) -> list[ContrastivePair]:
    """The label placebo: each pair's positive and negative answers swapped with probability 1/2."""
    rng = random.Random(seed)
    swap = lambda p: ContrastivePair(p.pair, p.question, p.neg_prompt, p.neg_answer, p.pos_prompt, p.pos_answer)  # noqa: E731
    return [swap(p) if rng.random() < 0.5 else p for p in pairs]


def row_of(m: dict, verdict: dict | None = None) -> dict:
    """A table row: the verdict as the estimator gave it (one source of truth for the JSON and the table)."""
    v = verdict or m["verdict"]
    quick = m.get("quick")
    layer, (effect, coherence) = max(m["effects"].items(), key=lambda item: item[1][0])
    row = {
        "trait": v["trait"],
        "pairs": v["n_pairs"],
        "questions": v["n_questions"],
        "judge AUROC": v["auroc"],
        "CI from": v["auroc_lo"],
        "CI to": v["auroc_hi"],
        "accuracy": v["accuracy"],
        "gap": v["gap"],
        "verdict": v["level"],
        f"first {QUICK} questions": None if quick is None else quick["level"],
        "projection AUROC": v["projection_auroc"],
        "steering effect at +2": effect,
        "at layer": int(layer),
        "coherence there": coherence,
        "check seconds": m["seconds"],
    }
    return (
        row
        if verdict is None
        else {
            **row,
            f"first {QUICK} questions": None,
            "steering effect at +2": None,
            "at layer": None,
            "coherence there": None,
            "check seconds": None,
        }
    )


def rows_of(m: dict) -> list[dict]:
    """The trait's row, and its label placebo's where it has one."""
    return [row_of(m)] + ([row_of(m, m["shuffled"])] if m.get("shuffled") else [])


SHUFFLED = ("pirate", "silly")


def placebo(name: str, questions_of: str) -> Trait:
    """A control: another trait's questions, with positive and negative instructions that ask for the same thing."""
    source = load_trait(questions_of)
    same = [
        ("Answer the user's question.", "Reply to the question the user asks."),
        ("Give a helpful answer.", "Be helpful in your reply."),
        ("Respond to the question below.", "Answer what is asked below."),
        ("Write a short, clear reply.", "Keep your reply short and clear."),
        ("Help the user with their question.", "Assist the user with what they ask."),
    ]
    return Trait.model_validate(
        {
            **source.model_dump(),
            "name": name,
            "description": "a control: both instructions ask for the same thing",
            "instructions": [{"pos": pos, "neg": neg} for pos, neg in same],
        }
    )


if __name__ == "__main__":
    main()
