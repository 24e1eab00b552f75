"""Does the weight projection onto a persona direction predict the trait after fine-tuning?

Fine-tunes LoRA checkpoints of SmolLM2 on mixtures of trait-expressing and
neutral answers (0/25/50/75/100% pirate), judges each checkpoint's answers to
the held-out questions with the offline judge, projects each checkpoint onto
the pirate LoRA direction, and reports Pearson/Spearman with p-values and
bootstrap CIs. Writes runs/drift/ and a section of docs/experiments.md.

Run: .venv/bin/python experiments/drift_mixtures.py --direction runs/lora-pirate
(`personactl lora extract --trait pirate --out runs/lora-pirate ...` first.)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

from _doc import pirate_setup, write_section
from personactl import chat_prompt, generate
from personactl.generation import format_prompts
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import LoRADirection, merged
from personactl.lora.finetune import finetune
from personactl.lora.projection import drift_report

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", type=Path, default=Path("runs/lora-pirate"), help="lora extract output folder")
    parser.add_argument("--out", type=Path, default=Path("runs/drift"))
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()

    backbone, trait, pairs, judge = pirate_setup(args.direction)
    direction = LoRADirection.load(args.direction / "diff")
    questions = trait.eval_questions
    config = LoRATrainConfig(rank=8, alpha=16.0, max_steps=args.steps, batch_size=8, learning_rate=5e-4)
    rng = random.Random(0)
    scores = {}
    for share in SHARES:
        name = f"pirate_{int(share * 100):03d}"
        folder = args.out / "checkpoints" / name
        chosen = [rng.choice(pairs) for _ in range(args.examples)]
        n_trait = round(share * args.examples)
        answers = [p.pos_answer for p in chosen[:n_trait]] + [p.neg_answer for p in chosen[n_trait:]]
        prompts = format_prompts(backbone, [chat_prompt(p.question) for p in chosen])
        if not (folder / "adapter_model.safetensors").exists():
            finetune(backbone, prompts, answers, folder, config, metadata={"trait_share": share})
        with merged(backbone, (LoRADirection.load(folder), 1.0)):
            generated = generate(backbone, [chat_prompt(q) for q in questions], max_new_tokens=48, batch_size=len(questions))
        scores[name] = sum(judge.score(questions, generated)) / len(questions)
        print(f"{name}: trait {scores[name]:.1f}")
    scores_csv = args.out / "scores.csv"
    with open(scores_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["checkpoint", "score"])
        writer.writerows(scores.items())
    report = drift_report(backbone, direction, args.out / "checkpoints", scores_csv)
    (args.out / "drift.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["correlation"], indent=2))
    rows = [{"checkpoint": r["checkpoint"], "trait share": f"{SHARES[i]:.0%}", "judged trait": r["score"],
             "projection": r["projection"], "cosine": r["cosine"]} for i, r in enumerate(report["rows"])]
    c = report["correlation"]
    note = (f"Pearson r = {c['pearson_r']:.3f} (p = {c['pearson_p']:.3g}, 95% CI {c['pearson_ci'][0]:.2f}..{c['pearson_ci'][1]:.2f}); "
            f"Spearman rho = {c['spearman_rho']:.3f} (p = {c['spearman_p']:.3g}). {args.examples} examples, {args.steps} steps, rank 8 per checkpoint.")
    print(write_section("drift", "Fine-tuning drift predicted by weight projection (pirate, SmolLM2-135M)", rows, note))


if __name__ == "__main__":
    main()
