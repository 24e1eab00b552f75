"""Preventative steering (Chen et al.): fine-tune on trait-inducing data with and without steering.

Fine-tunes SmolLM2 LoRA adapters on pirate answers (asked without the pirate
instruction): plainly, with the persona vector added in the activations during
training, with the LoRA persona direction pre-merged during training, and with
the persona vector's component projected out of the layer's output during
training (ablation, as the reference's training code can). The
steering is removed after training; each adapter is then judged on the
held-out questions for trait and coherence. Writes runs/preventative/ and a
section of docs/experiments.md.

Run: .venv/bin/python experiments/preventative_steering.py
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from _doc import pirate_setup, write_section

from personactl import SteeringTerm, chat_prompt, generate, load_vector
from personactl.evaluate import SCORE_RANGE
from personactl.generation import format_prompts
from personactl.intervals import mean_ci
from personactl.judges.text import RepetitionCoherenceJudge
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import LoRADirection, merged
from personactl.lora.finetune import finetune


def note(s: dict) -> str:
    """The section's note, from the run's settings (no number written by hand)."""
    return (
        f"{s['examples']} pirate answers, {s['steps']} LoRA steps ({s['epochs']} epoch{'s' * (s['epochs'] != 1)}; rank {s['rank']}, alpha {s['alpha']:g}, lr {s['learning_rate']:g}, "
        f"batch {s['batch_size']}), steering removed after training; offline judge (held-out accuracy "
        f"{s['judge_heldout_accuracy']:.2f}), {s['n_questions']} held-out questions, greedy, {s['max_new_tokens']} tokens; "
        "brackets: 95% CIs over questions (t); the last column compares each run with plain fine-tuning question by question."
    )


def versus(scores: list[float], reference: list[float]) -> str:
    """Mean per-question difference to `reference` with its 95% CI (t over questions), and what it allows one to say."""
    mean, low, high = mean_ci([a - b for a, b in zip(scores, reference)])
    verdict = "lower" if high < 0 else "higher" if low > 0 else "no difference shown (CI includes 0)"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]: {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, default=Path("runs/demo-pirate/vector.safetensors"))
    parser.add_argument("--layer", type=int, default=25)
    parser.add_argument("--steer-coef", type=float, default=2.0)
    parser.add_argument("--direction", type=Path, default=Path("runs/lora-pirate"))
    parser.add_argument("--premerge-coef", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/preventative"))
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    backbone, trait, pairs, judge = pirate_setup(args.direction)
    coherence = RepetitionCoherenceJudge()
    chosen = random.Random(0).sample(pairs, min(args.examples, len(pairs)))
    prompts = format_prompts(backbone, [chat_prompt(p.question) for p in chosen])
    answers = [p.pos_answer for p in chosen]  # pirate answers to plain questions: trait-inducing data
    vector = load_vector(args.vector, backbone=backbone)
    direction = LoRADirection.load(args.direction / "diff")
    config = LoRATrainConfig(rank=args.rank, alpha=2.0 * args.rank, max_steps=args.steps, batch_size=8, learning_rate=5e-4)
    runs = {
        "no fine-tuning": None,
        "fine-tuned": {},
        f"fine-tuned, activation steering +{args.steer_coef:g} v (layer {args.layer})": {
            "steering": [SteeringTerm(vector, args.layer, args.steer_coef)]
        },
        f"fine-tuned, pre-merged {args.premerge_coef:+g} dW": {"premerge": [(direction, args.premerge_coef)]},
        f"fine-tuned, v ablated (layer {args.layer})": {"steering": [SteeringTerm(vector, args.layer, 1.0, op="ablate")]},
    }
    questions = trait.eval_questions
    rows, scores = [], {}
    trained_steps = set()  # optimiser steps each adapter took: --steps is only a cap (epochs * examples / batch may be fewer)
    for i, (name, options) in enumerate(runs.items()):
        folder = args.out / f"run{i}"
        if options is not None and not (folder / "adapter_model.safetensors").exists():
            finetune(backbone, prompts, answers, folder, config, metadata={"run": name}, **options)
        if options is not None:
            trained_steps.add(len(json.loads((folder / "persona.json").read_text())["losses"]))
        terms = [] if options is None else [(LoRADirection.load(folder), 1.0)]
        with merged(backbone, *terms):
            generated = generate(backbone, [chat_prompt(q) for q in questions], max_new_tokens=args.max_new_tokens, batch_size=len(questions))
        scores[name] = judge.score(questions, generated)
        t, t_lo, t_hi = mean_ci(scores[name], bounds=SCORE_RANGE)
        c, c_lo, c_hi = mean_ci(coherence.score(questions, generated), bounds=SCORE_RANGE)
        rows.append(
            {
                "run": name,
                "trait": f"{t:.1f} [{t_lo:.1f}, {t_hi:.1f}]",
                "coherence": f"{c:.1f} [{c_lo:.1f}, {c_hi:.1f}]",
                "example": generated[0][:90].replace("|", "/").replace("\n", " "),
            }
        )
        print(rows[-1])
    for row in rows:
        row["trait vs fine-tuned (paired)"] = versus(scores[row["run"]], scores["fine-tuned"]) if row["run"] != "fine-tuned" else "-"
    if len(trained_steps) != 1:
        raise SystemExit(f"the adapters under {args.out} took different numbers of steps {sorted(trained_steps)}: delete them and re-run")
    settings = {
        "examples": len(chosen),
        "steps": trained_steps.pop(),
        "max_steps": args.steps,
        "epochs": config.epochs,
        "rank": config.rank,
        "alpha": config.alpha,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "n_questions": len(questions),
        "max_new_tokens": args.max_new_tokens,
        "judge_heldout_accuracy": judge.heldout_accuracy,
    }
    print(
        write_section(
            "preventative", "Preventative steering during fine-tuning (pirate, SmolLM2-135M)", rows, note(settings), data={"settings": settings}
        )
    )


if __name__ == "__main__":
    main()
