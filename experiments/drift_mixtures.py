"""Does the weight projection onto a persona direction predict the trait after fine-tuning?

Fine-tunes LoRA checkpoints of SmolLM2 on mixtures of trait-expressing and
neutral answers (by default 9 pirate shares, 0 to 100% in steps of 12.5%, each
with 2 seeds; the seed draws the examples, the LoRA initialisation and the data
order), judges each checkpoint's answers to the held-out questions with the
offline judge, projects each checkpoint onto the pirate LoRA direction, and
correlates the two over all checkpoints: Pearson and Spearman with permutation
p-values and Fisher-z CIs (for rho with Bonett and Wright's variance). The note, conclusion included,
is written from the run's settings and results (`note`), and the raw
per-checkpoint numbers go to docs/experiments/drift.json, so
tests/test_docs_numbers.py can recompute the section. Writes runs/drift/ and a
section of docs/experiments.md. A checkpoint whose adapter exists is not
retrained (delete runs/drift after changing the training settings).

Run: .venv/bin/python experiments/drift_mixtures.py --direction runs/lora-pirate
(first: `personactl lora extract --trait pirate --out runs/lora-pirate --rank 8 --alpha 16
--epochs 5 --max-steps 40 --n-questions 12 --lr 5e-4`, about 4 minutes on 2 cores.)
With --from-json docs/experiments/drift.json it loads no model: the stored
per-checkpoint numbers are correlated again and the section rewritten (after a
change to the statistics, not to the measurements).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from _doc import pirate_setup, write_section

from personactl import chat_prompt, generate
from personactl.generation import format_prompts
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import LoRADirection, merged
from personactl.lora.finetune import finetune
from personactl.lora.projection import correlate, drift_report

NAME, TITLE = "drift", "Fine-tuning drift predicted by weight projection (pirate, SmolLM2-135M)"
CLAIM = 0.7  # the earlier claim (5 checkpoints): the projection predicts the judged trait with r > 0.7


def shares(n: int) -> list[float]:
    """n trait shares evenly spaced from 0 to 1."""
    return [i / (n - 1) for i in range(n)]


def checkpoint_name(share: float, seed: int) -> str:
    return f"pirate_{round(share * 1000):04d}_s{seed}"  # per mille: 12.5% -> 0125


def _verdict(lo: float, hi: float, claim: float) -> str:
    if lo > claim:
        return "above"
    if hi < claim:
        return "below"
    return "positive" if lo > 0 else "null"


def conclusion(c: dict, claim: float = CLAIM) -> str:
    """What the Fisher-z 95% interval of r supports about r > `claim`."""
    lo, hi = c["pearson_ci"]
    text = {
        "above": f"the Fisher-z 95% interval of r lies above {claim:g} (lower bound {lo:.2f}): the data support r > {claim:g}",
        "below": f"the Fisher-z 95% interval of r lies below {claim:g} (upper bound {hi:.2f}): the data contradict r > {claim:g}",
        "positive": (
            f"the Fisher-z 95% interval of r excludes 0 but reaches below {claim:g} (lower bound {lo:.2f}): the data support "
            f"a positive correlation, not r > {claim:g}"
        ),
        "null": f"the Fisher-z 95% interval of r includes 0 (lower bound {lo:.2f}): the data do not show a correlation",
    }[_verdict(lo, hi, claim)]
    return f"Conclusion: {text}."


def a_cosine(checkpoint: LoRADirection, reference: LoRADirection) -> float:
    """Mean |cosine| of the LoRA A factors of the modules both adapt: ~1 when they started from one initialisation."""
    shared = [m for m in checkpoint.modules if m in reference.modules and checkpoint.modules[m].A.shape == reference.modules[m].A.shape]
    cosines = [
        abs(
            float(torch.nn.functional.cosine_similarity(checkpoint.modules[m].A.flatten().double(), reference.modules[m].A.flatten().double(), dim=0))
        )
        for m in shared
    ]
    return sum(cosines) / len(cosines) if cosines else float("nan")


def per_seed(settings: dict, points: list[dict]) -> str:
    """Pearson r, projection range and A-factor cosine per seed, and what their spread says about pooling seeds."""
    parts, spread = [], {}
    for seed in settings["seeds"]:
        mine = [p for p in points if p["seed"] == seed]
        x, y = np.array([p["projection"] for p in mine]), np.array([p["judged_trait"] for p in mine])
        spread[seed] = float(np.ptp(x))
        cos = sum(p["a_cosine"] for p in mine) / len(mine)
        parts.append(
            f"seed {seed}: r = {np.corrcoef(x, y)[0, 1]:.2f}, projections {x.min():.2f}..{x.max():.2f}, "
            f"LoRA A factors at |cos| {cos:.2f} with the direction's"
        )
    text = f"Per seed: {'; '.join(parts)}."
    widest, narrowest = max(spread, key=spread.get), min(spread, key=spread.get)
    ratio = spread[widest] / spread[narrowest] if spread[narrowest] > 0 else float("inf")
    if ratio > 3 and widest == settings["direction_seed"]:
        text += (
            f" The projections of seed {widest}, the seed the direction's LoRAs were trained with (so the same A "
            f"initialisation), spread {ratio:.0f}x wider than those of seed {narrowest}: within one initialisation the "
            "projection tracks the trait, but values from different initialisations are not on one scale, and pooling them "
            "lowers r."
        )
    return text


def note(settings: dict, c: dict, points: list[dict]) -> str:
    """The section's note, from the run's settings, its checkpoints and their correlation (no number written by hand)."""
    s = settings
    share_list = s["shares"]
    step = share_list[1] - share_list[0]
    pairings = f"exact over all {c['n_perm']} pairings" if c["p_method"] == "exact" else f"Monte-Carlo, {c['n_perm']} pairings"
    return (
        f"{c['n']} checkpoints: {len(share_list)} pirate shares ({share_list[0]:.0%} to {share_list[-1]:.0%} in steps of {step:.1%}) "
        f"x {len(s['seeds'])} seeds ({', '.join(map(str, s['seeds']))}); each a rank-{s['rank']} LoRA (alpha {s['alpha']:g}, "
        f"lr {s['learning_rate']:g}, batch {s['batch_size']}) trained {s['steps']} steps on {s['examples']} answers; the seed draws "
        f"the examples, the LoRA initialisation and the data order. Judged trait: offline judge (held-out accuracy "
        f"{s['judge_heldout_accuracy']:.2f}), mean over {s['n_questions']} held-out questions, greedy, {s['max_new_tokens']} tokens. "
        f"Pearson r = {c['pearson_r']:.3f} (permutation p = {c['pearson_p']:.2g}, {pairings}); 95% CI "
        f"{c['pearson_ci'][0]:.2f}..{c['pearson_ci'][1]:.2f} (Fisher z). Spearman rho = {c['spearman_rho']:.3f} "
        f"(permutation p = {c['spearman_p']:.2g}; 95% CI {c['spearman_ci'][0]:.2f}..{c['spearman_ci'][1]:.2f}, Fisher z with "
        "Bonett and Wright's variance). "
        f"{conclusion(c, s['claim'])} {per_seed(s, points)}"
    )


def recompute(data: dict) -> dict:
    """The correlation of a stored drift.json, recomputed by the current `correlate` with the stored seeds."""
    points, s = data["checkpoints"], data["settings"]
    return correlate([p["projection"] for p in points], [p["judged_trait"] for p in points], seed=s["correlation_seed"], n_perm=s["n_perm"])


def mixture(pairs, seed: int, share: float, examples: int) -> tuple[list[str], list[str]]:
    """(questions, answers) of one checkpoint's training data: `examples` pairs drawn with `seed` (the same questions for every
    share of a seed), the first round(share * examples) answered with the trait, the rest without (nested: a larger share
    keeps the smaller share's trait answers)."""
    rng = random.Random(seed)
    chosen = [rng.choice(pairs) for _ in range(examples)]
    n_trait = round(share * examples)
    return [p.question for p in chosen], [p.pos_answer for p in chosen[:n_trait]] + [p.neg_answer for p in chosen[n_trait:]]


def train_and_judge(backbone, trait, pairs, judge, settings: dict, out: Path) -> tuple[list[dict], list[Path]]:
    """Fine-tune (or reuse) every share x seed checkpoint and judge its answers (cached in the checkpoint's judged.json)."""
    questions = trait.eval_questions
    points, paths = [], []
    for seed in settings["seeds"]:
        prompts = format_prompts(backbone, [chat_prompt(q) for q in mixture(pairs, seed, 0.0, settings["examples"])[0]])
        config = LoRATrainConfig(
            rank=settings["rank"],
            alpha=settings["alpha"],
            max_steps=settings["steps"],
            batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            seed=seed,
        )
        for share in settings["shares"]:
            name, started = checkpoint_name(share, seed), time.perf_counter()
            folder = out / "checkpoints" / name
            answers = mixture(pairs, seed, share, settings["examples"])[1]
            if not (folder / "adapter_model.safetensors").exists():
                finetune(backbone, prompts, answers, folder, config, metadata={"trait_share": share, "seed": seed})
            judged_file = folder / "judged.json"
            asked = {"questions": questions, "max_new_tokens": settings["max_new_tokens"]}
            judged = json.loads(judged_file.read_text()) if judged_file.is_file() else {}
            if {k: judged.get(k) for k in asked} != asked:
                with merged(backbone, (LoRADirection.load(folder), 1.0)):
                    generated = generate(
                        backbone, [chat_prompt(q) for q in questions], max_new_tokens=settings["max_new_tokens"], batch_size=len(questions)
                    )
                judged = {**asked, "answers": generated}
                judged_file.write_text(json.dumps(judged, indent=2))
            score = sum(judge.score(questions, judged["answers"])) / len(questions)
            points.append({"checkpoint": name, "share": share, "seed": seed, "judged_trait": score})
            paths.append(folder)
            print(f"{name}: trait {score:.1f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return points, paths


def write(settings: dict, points: list[dict]) -> None:
    """Correlate the per-checkpoint numbers with the current `correlate`; write the section and drift.json."""
    data = {"settings": settings, "checkpoints": points}
    data["correlation"] = recompute(data)
    print(json.dumps(data["correlation"], indent=2))
    rows = [
        {
            "checkpoint": p["checkpoint"],
            "seed": p["seed"],
            "trait share": f"{p['share']:.1%}",
            "judged trait": p["judged_trait"],
            "projection": p["projection"],
            "cosine": p["cosine"],
            "A-factor cos": p["a_cosine"],
        }
        for p in points
    ]
    print(write_section(NAME, TITLE, rows, note(settings, data["correlation"], points), data=data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", type=Path, default=Path("runs/lora-pirate"), help="lora extract output folder")
    parser.add_argument("--out", type=Path, default=Path("runs/drift"))
    parser.add_argument("--examples", type=int, default=48, help="training answers per checkpoint")
    parser.add_argument("--steps", type=int, default=24, help="optimiser steps per checkpoint")
    parser.add_argument("--shares", type=int, default=9, help="trait shares, evenly spaced from 0 to 100%%")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; every share is trained once per seed")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--n-perm", type=int, default=10_000)
    parser.add_argument("--from-json", type=Path, help="a stored drift.json: correlate its checkpoints again, without a model")
    args = parser.parse_args()
    if args.from_json:
        stored = json.loads(args.from_json.read_text())
        write(stored["settings"], stored["checkpoints"])
        return

    backbone, trait, pairs, judge = pirate_setup(args.direction)
    direction = LoRADirection.load(args.direction / "diff")  # before an hour of fine-tuning: a missing direction fails now
    settings = {
        "examples": args.examples,
        "steps": args.steps,
        "rank": args.rank,
        "alpha": 2.0 * args.rank,
        "learning_rate": 5e-4,
        "batch_size": 8,
        "shares": shares(args.shares),
        "seeds": [int(s) for s in args.seeds.split(",")],
        "n_questions": len(trait.eval_questions),
        "max_new_tokens": args.max_new_tokens,
        "judge_heldout_accuracy": judge.heldout_accuracy,
        "n_perm": args.n_perm,
        "correlation_seed": 0,
        "claim": CLAIM,
        "direction_seed": json.loads((args.direction / "pos" / "persona.json").read_text())["train"]["seed"],
    }
    points, paths = train_and_judge(backbone, trait, pairs, judge, settings, args.out)
    scores_csv = args.out / "scores.csv"
    with open(scores_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["checkpoint", "score"])
        writer.writerows((p["checkpoint"], p["judged_trait"]) for p in points)
    report = drift_report(backbone, direction, paths, scores_csv, seed=settings["correlation_seed"], n_perm=args.n_perm)
    (args.out / "drift.json").write_text(json.dumps(report, indent=2, default=str))
    reference = LoRADirection.load(args.direction / "pos")  # the direction's positive LoRA: its A factors are its initialisation's
    for point, row, path in zip(points, report["rows"], paths):
        point.update(projection=row["projection"], cosine=row["cosine"], a_cosine=a_cosine(LoRADirection.load(path), reference))
    c = recompute({"settings": settings, "checkpoints": points})
    assert json.dumps(c) == json.dumps(report["correlation"]), "the stored per-checkpoint numbers must give the same correlation"
    write(settings, points)


if __name__ == "__main__":
    main()
