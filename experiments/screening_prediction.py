"""Does the training data's projection difference, measured before any training, predict the trait after fine-tuning?

On the drift mixtures (experiments/drift_mixtures.py: pirate shares 0-100% x
seeds, each a LoRA checkpoint judged on the held-out questions), screens every
checkpoint's training data with `personactl.screen` (dataset answers vs the
model's own greedy answers, projected onto the activation persona vector) and
correlates the dataset-level mean projection difference with the judged trait
after fine-tuning, side by side with the weight-space prediction (the
checkpoint's projection onto the LoRA persona direction) on the same
checkpoints. Then, on the 50% mixture of every seed: does removing the top 10%
flagged samples lower the post-fine-tune trait more than removing a random 10%?
Writes runs/screening/ and two sections of docs/experiments.md
(screening_prediction, screening_removal); the raw numbers go to their JSON so
tests/test_docs_numbers.py can recompute the printed correlations.

Run after the drift mixtures and the demo (for runs/demo-pirate/vector.safetensors):
.venv/bin/python experiments/screening_prediction.py
With --from-json docs/experiments it loads no model: the per-dataset numbers and
per-question scores stored in both sections' JSON are correlated and compared
again and the sections rewritten (after a change to the statistics, not to the
measurements).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
from _doc import pirate_setup, write_section
from drift_mixtures import checkpoint_name, mixture

from personactl import chat_prompt, generate, load_vector
from personactl.evaluate import SCORE_RANGE
from personactl.generation import format_prompts
from personactl.intervals import mean_ci
from personactl.lora.adapters import PersonaData
from personactl.lora.chat import default_layer
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import LoRADirection, merged
from personactl.lora.finetune import finetune
from personactl.lora.projection import correlate
from personactl.screening import AnswerCache, screen

PREDICTORS = {"projection difference": "difference", "weight projection": "projection"}


def correlations(points: list[dict], settings: dict) -> list[dict]:
    """Pearson/Spearman of each predictor with the judged trait: over all checkpoints and per seed."""
    groups = [("all seeds", points)] + [(f"seed {s}", [p for p in points if p["seed"] == s]) for s in settings["seeds"]]
    rows = []
    for label, key in PREDICTORS.items():
        for group, mine in groups:
            c = correlate([p[key] for p in mine], [p["judged_trait"] for p in mine], seed=settings["correlation_seed"], n_perm=settings["n_perm"])
            rows.append(
                {
                    "predictor": label,
                    "checkpoints": group,
                    "n": c["n"],
                    "needs training": key == "projection",
                    "pearson_r": c["pearson_r"],
                    "pearson_p": c["pearson_p"],
                    "pearson_ci": c["pearson_ci"],
                    "spearman_rho": c["spearman_rho"],
                    "spearman_p": c["spearman_p"],
                    "spearman_ci": c["spearman_ci"],
                }
            )
    return rows


def correlation_table(rows: list[dict]) -> list[dict]:
    return [
        {
            "predictor": r["predictor"],
            "checkpoints": r["checkpoints"],
            "n": r["n"],
            "needs training": "yes" if r["needs training"] else "no",
            "Pearson r [95% CI]": f"{r['pearson_r']:.2f} [{r['pearson_ci'][0]:.2f}, {r['pearson_ci'][1]:.2f}]",
            "permutation p (r)": f"{r['pearson_p']:.2g}",
            "Spearman rho [95% CI]": f"{r['spearman_rho']:.2f} [{r['spearman_ci'][0]:.2f}, {r['spearman_ci'][1]:.2f}]",
            "permutation p (rho)": f"{r['spearman_p']:.2g}",
        }
        for r in rows
    ]


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def prediction_note(settings: dict, rows: list[dict], points: list[dict]) -> str:
    """Which predictor did better, from the stored correlations (no number written by hand)."""
    pooled = {r["predictor"]: r for r in rows if r["checkpoints"] == "all seeds"}
    diff, weight = pooled["projection difference"], pooled["weight projection"]
    better = "projection difference" if diff["pearson_r"] > weight["pearson_r"] else "weight projection"
    tie = _overlap(diff["pearson_ci"], weight["pearson_ci"])
    comparison = (
        f"Over all {diff['n']} checkpoints, Pearson r = {diff['pearson_r']:.3f} (p = {diff['pearson_p']:.2g}) for the projection "
        f"difference vs r = {weight['pearson_r']:.3f} (p = {weight['pearson_p']:.2g}) for the weight projection: the "
        f"{better} is higher, "
        + (
            "but their 95% intervals overlap (which is no test of the difference), so this run does not say which predicts better."
            if tie
            else "and their 95% intervals do not overlap."
        )
    )
    share_r = float(np.corrcoef([p["share"] for p in points], [p["difference"] for p in points])[0, 1])
    judged_r = float(np.corrcoef([p["share"] for p in points], [p["judged_trait"] for p in points])[0, 1])
    caveat = (
        f" Caveat: in these mixtures the datasets differ only in their trait share, and the projection difference follows "
        f"the share almost exactly (r = {share_r:.3f}; the share itself gives r = {judged_r:.3f} with the judged trait), so this "
        "shows that the projection difference reads the share of trait answers without training and on one scale across "
        "seeds (the weight projection's scale depends on the LoRA initialisation), not that it ranks datasets that differ "
        "in other ways."
    )
    return (
        f"{diff['n']} checkpoints of the drift mixtures ({len(settings['shares'])} pirate shares x seeds "
        f"{', '.join(map(str, settings['seeds']))}; {settings['examples']} answers, {settings['steps']} LoRA steps each). "
        f"Projection difference: mean over each checkpoint's training answers of (dataset answer - the base model's own greedy "
        f"answer, {settings['max_new_tokens']} tokens), projected onto the pirate persona vector at layer {settings['layer']} "
        f"(mean over answer tokens); measured before any training: {settings['screen_seconds_first']:.1f} s for the first dataset "
        f"of a seed (the model's own answers generated, then cached), {settings['screen_seconds_cached']:.1f} s for each later one "
        f"(capture only), vs {settings['finetune_seconds']:.0f} s per fine-tune in this run. Weight projection: each trained checkpoint projected onto the LoRA persona direction (drift section). "
        f"Judged trait: the drift section's, offline judge. Permutation p: Monte-Carlo over {settings['n_perm']} pairings; "
        f"CIs: Fisher z (Spearman's with Bonett and Wright's variance). {comparison}{caveat}"
    )


def screen_seconds(points: list[dict]) -> dict:
    """Mean screening time of the first dataset of each seed (answers generated) and of the later ones (answers cached)."""
    seen, first, cached = set(), [], []
    for p in points:
        (cached if p["seed"] in seen else first).append(p["seconds"])
        seen.add(p["seed"])
    return {"screen_seconds_first": float(np.mean(first)), "screen_seconds_cached": float(np.mean(cached))}


def removal_table(results: list[dict]) -> list[dict]:
    return [
        {
            "removed": r["condition"],
            "seed": r["seed"],
            "trait answers removed": r["trait_removed"],
            "judged trait [95% CI]": f"{r['trait'][0]:.1f} [{r['trait'][1]:.1f}, {r['trait'][2]:.1f}]",
        }
        for r in results
    ]


def removal_note(settings: dict, comparison: dict) -> str:
    """The removal experiment's note and verdict, from the stored per-question differences."""
    mean, low, high = comparison["difference"]
    verdict = (
        "removing the flagged samples lowered the trait more than removing random ones"
        if high < 0
        else "removing the flagged samples raised the trait compared with removing random ones"
        if low > 0
        else "the interval includes 0: this run cannot tell flagged removal from random removal"
    )
    return (
        f"The {settings['removal_share']:.0%} mixture of each seed ({settings['examples']} answers) less {settings['removed']} samples "
        f"({settings['remove_percent']:g}%): the top-flagged ones by projection difference, or {settings['random_draws']} random draws; "
        f"each retrained with the drift settings ({settings['steps']} steps) and judged on {settings['n_questions']} held-out questions "
        f"(brackets: 95% CIs, Student's t over the questions). Flagged minus random (per question, averaged over seeds and "
        f"draws): {mean:+.1f} [{low:+.1f}, {high:+.1f}] (95% CI, Student's t over the {settings['n_questions']} questions): "
        f"{verdict}."
    )


def screen_mixtures(backbone, pairs, vector, layer: int, drift: dict, cache: AnswerCache, max_new_tokens: int) -> tuple[list[dict], dict]:
    """Each drift checkpoint's numbers plus the projection difference of its training data (and the screenings by name)."""
    examples = drift["settings"]["examples"]
    points, screenings = [], {}
    for point in drift["checkpoints"]:
        started = time.perf_counter()
        questions, answers = mixture(pairs, point["seed"], point["share"], examples)
        result = screen(backbone, PersonaData(questions, answers), vector, layer, max_new_tokens=max_new_tokens, cache=cache)
        screenings[point["checkpoint"]] = result
        points.append(
            {
                **{k: point[k] for k in ("checkpoint", "share", "seed", "judged_trait", "projection")},
                "difference": result.summary["mean_difference"],
                "seconds": time.perf_counter() - started,
            }
        )
        print(f"{point['checkpoint']}: difference {points[-1]['difference']:+.3f}, judged {point['judged_trait']:.1f}", flush=True)
    return points, screenings


def with_trait_ci(result: dict) -> dict:
    """A removal's record with the mean judged trait over its questions and the 95% CI (Student's t, within 0-100)."""
    return {**result, "trait": list(mean_ci(result["scores"], bounds=SCORE_RANGE))}


def judged_per_question(backbone, judge, questions: list[str], folder: Path, max_new_tokens: int) -> list[float]:
    with merged(backbone, (LoRADirection.load(folder), 1.0)):
        answers = generate(backbone, [chat_prompt(q) for q in questions], max_new_tokens=max_new_tokens, batch_size=len(questions))
    return judge.score(questions, answers)


def removal(backbone, pairs, judge, trait, drift: dict, screenings: dict, args, out: Path) -> tuple[list[dict], int, float]:
    """Retrain the chosen mixture of every seed without its top-flagged or random samples; judge each per question.
    Returns the records, the number of samples removed and the mean fine-tuning time."""
    s = drift["settings"]
    questions = trait.eval_questions
    n_remove = math.ceil(s["examples"] * args.remove_percent / 100)
    n_trait = round(args.removal_share * s["examples"])
    results, seconds = [], []
    for seed in s["seeds"]:
        base_q, base_a = mixture(pairs, seed, args.removal_share, s["examples"])
        prompts = format_prompts(backbone, [chat_prompt(q) for q in base_q])
        ranked = screenings[checkpoint_name(args.removal_share, seed)].ranked()  # exactly n_remove, as the random draws
        flagged = sorted(r["index"] for r in ranked[:n_remove] if r["difference"] is not None)
        draws = [("top flagged", flagged)] + [
            (f"random {d + 1}", sorted(random.Random(1000 * seed + d).sample(range(s["examples"]), n_remove))) for d in range(args.random_draws)
        ]
        config = LoRATrainConfig(
            rank=s["rank"], alpha=s["alpha"], max_steps=s["steps"], batch_size=s["batch_size"], learning_rate=s["learning_rate"], seed=seed
        )
        for condition, removed in draws:
            folder = out / "removal" / f"s{seed}_{condition.replace(' ', '_')}"
            keep = [i for i in range(s["examples"]) if i not in set(removed)]
            if not (folder / "adapter_model.safetensors").exists():
                started = time.perf_counter()
                finetune(backbone, [prompts[i] for i in keep], [base_a[i] for i in keep], folder, config, metadata={"removed": removed, "seed": seed})
                (folder / "seconds.txt").write_text(f"{time.perf_counter() - started:.3f}")
            seconds.append(float((folder / "seconds.txt").read_text()))
            scores = judged_per_question(backbone, judge, questions, folder, s["max_new_tokens"])
            results.append(
                with_trait_ci(
                    {"condition": condition, "seed": seed, "removed": removed, "trait_removed": sum(i < n_trait for i in removed), "scores": scores}
                )
            )
            print(f"seed {seed}, {condition}: trait {results[-1]['trait'][0]:.1f}", flush=True)
    return results, n_remove, float(np.mean(seconds))


def compare(results: list[dict]) -> dict:
    """Flagged minus random removal, per question (averaged over seeds and random draws), with its 95% CI (t over questions)."""
    flagged = np.mean([r["scores"] for r in results if r["condition"] == "top flagged"], axis=0)
    randoms = np.mean([r["scores"] for r in results if r["condition"] != "top flagged"], axis=0)
    return {"difference": list(mean_ci((flagged - randoms).tolist()))}


def write(settings: dict, points: list[dict], results: list[dict]) -> None:
    """Correlate and compare with the current statistics; write both sections and their JSON."""
    rows = correlations(points, settings)
    comparison = {**compare(results), "n_removed": settings["removed"]}
    print(
        write_section(
            "screening_prediction",
            "Predicting fine-tuning drift before training: projection difference vs weight projection",
            correlation_table(rows),
            prediction_note(settings, rows, points),
            data={"settings": settings, "datasets": points, "correlations": rows},
        )
    )
    print(
        write_section(
            "screening_removal",
            "Removing the top-flagged 10% of a 50% pirate mixture vs a random 10%",
            removal_table(results),
            removal_note(settings, comparison),
            data={"settings": settings, "removals": results, "comparison": comparison},
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", type=Path, default=Path("runs/lora-pirate"), help="lora extract output folder")
    parser.add_argument(
        "--drift",
        type=Path,
        default=Path("docs/experiments/drift.json"),
        help="the drift section's data (drift_mixtures.py writes it with its checkpoints under runs/drift)",
    )
    parser.add_argument("--vector", type=Path, default=Path("runs/demo-pirate/vector.safetensors"))
    parser.add_argument("--layer", type=int, default=None, help="default: the vector's run's chosen layer")
    parser.add_argument("--out", type=Path, default=Path("runs/screening"))
    parser.add_argument("--max-new-tokens", type=int, default=48, help="length of the model's own answers")
    parser.add_argument("--removal-share", type=float, default=0.5)
    parser.add_argument("--remove-percent", type=float, default=10.0)
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument(
        "--from-json",
        type=Path,
        help="a folder holding screening_prediction.json and screening_removal.json: recompute their statistics without a model",
    )
    args = parser.parse_args()
    if args.from_json:
        prediction = json.loads((args.from_json / "screening_prediction.json").read_text())
        removals = json.loads((args.from_json / "screening_removal.json").read_text())["removals"]
        write(prediction["settings"], prediction["datasets"], [with_trait_ci(r) for r in removals])
        return

    backbone, trait, pairs, judge = pirate_setup(args.direction)
    vector = load_vector(args.vector, backbone=backbone)
    layer = args.layer if args.layer is not None else default_layer(args.vector, backbone.n_layers)
    drift = json.loads(args.drift.read_text())
    drift_settings = drift["settings"]
    cache = AnswerCache(args.out / "model_answers.jsonl")
    points, screenings = screen_mixtures(backbone, pairs, vector, layer, drift, cache, args.max_new_tokens)
    results, n_removed, finetune_seconds = removal(backbone, pairs, judge, trait, drift, screenings, args, args.out)
    settings = {
        **{k: drift_settings[k] for k in ("shares", "seeds", "examples", "steps", "n_perm", "correlation_seed")},
        "layer": layer,
        "max_new_tokens": args.max_new_tokens,
        "vector": vector.fingerprint(),
        **screen_seconds(points),
        "finetune_seconds": finetune_seconds,
        "removal_share": args.removal_share,
        "remove_percent": args.remove_percent,
        "removed": n_removed,
        "random_draws": args.random_draws,
        "n_questions": len(trait.eval_questions),
    }
    write(settings, points, results)


if __name__ == "__main__":
    main()
