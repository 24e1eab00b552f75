"""Conditional steering (CAST-style): a pirate vector that acts only on questions about the sea.

On SmolLM2: extracts a pirate persona vector (or reads --vector), finds the sea
condition from the shipped prompt sets (`personactl condition find`: layer chosen
by cross-validation on the training prompts), and on the held-out prompts only
(never used for any choice) generates greedy answers with no steering, with
unconditional pirate steering and with conditional pirate steering. Reports the
firing rate on the held-out on-topic and off-topic prompts and the judged pirate
trait (offline embedding judge fitted on the extraction answers) with 95% CIs
over questions per cell, and holds the run to the criteria of
`conditions.conditional_effect` (the other questions are tested where the
condition fired, and their mean rise against --margin). Writes runs/conditional/
and a section of docs/experiments.md.

Run: OMP_NUM_THREADS=1 .venv/bin/python experiments/conditional_steering.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _doc import write_section

from personactl import ExtractionSettings, SteeringTerm, chat_prompt, extract, generate, load_model, load_pairs, load_trait, load_vector
from personactl.conditions import MARGIN, SCALE, conditional_effect, find_condition, layer_table, read_prompts
from personactl.extraction import question_groups, save_pairs
from personactl.intervals import mean_ci
from personactl.judges.factory import make_judges


def ci(values) -> str:
    mean, lo, hi = mean_ci(values)
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def note(s: dict) -> str:
    """The section's note, from the run's settings (no number written by hand)."""
    (d_on, lo_on, hi_on), (d_off, lo_off, hi_off) = s["paired_difference_sea"], s["paired_difference_other"]
    (d_fired, lo_fired, hi_fired) = s["paired_difference_other_fired"]
    verdict = "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in s["criteria"].items())
    fired = (
        f"{d_fired:+.1f} [{lo_fired:+.1f}, {hi_fired:+.1f}]"
        if s["n_fired_other"] >= 2
        else f"{d_fired:+.1f} (one question: no interval)"
        if s["n_fired_other"]
        else "none fired"
    )
    return (
        f"Pirate vector ({s['trait']}, {s['n_questions']} extraction questions) added at layer {s['layer']} with coefficient "
        f"{s['coef']:g}; the sea condition from the shipped `sea`/`other` prompt sets ({s['n_train'][0]}+{s['n_train'][1]} "
        f"training prompts; {s['condition_method']} direction on each prompt's mean state after the chat template's "
        f"{s['condition_skip_prefix']}-token shared prefix): layer {s['condition_layer']} (chosen by "
        f"{s['condition_cv_accuracy']:.2f} cross-validated accuracy on "
        f"the training prompts), threshold {s['condition_threshold']:.3g}, held-out balanced accuracy "
        f"{s['condition_heldout_accuracy']:.2f}. Rows are scored on the {s['n_heldout'][0]} sea and {s['n_heldout'][1]} other "
        f"held-out questions only (used for no choice); greedy, {s['max_new_tokens']} tokens; offline embedding judge (held-out "
        f"accuracy {s['judge_heldout_accuracy']:.2f}); brackets: Student-t 95% CIs over questions. Paired difference conditional "
        f"- unsteered: sea {d_on:+.1f} [{lo_on:+.1f}, {hi_on:+.1f}], other {d_off:+.1f} [{lo_off:+.1f}, {hi_off:+.1f}]; on the "
        f"{s['n_fired_other']} other question(s) where the condition fired: {fired}. The other questions' mean rise is at most "
        f"{s['rise_other_bound']:.1f} points (upper 95% bound: Clopper-Pearson bound of the share that fires times the t bound "
        f"of the rise where it fires, {s['scale']:g} with fewer than two; questions where it did not fire were not steered), "
        f"against a margin of {s['margin']:g}. Criteria: {verdict}."
        f" Note: the offline pirate judge already scores the unsteered sea answers high ({s['unsteered_trait_sea']:.1f} on "
        f"average, against {s['unsteered_trait_other']:.1f} on the other questions): it reads sea vocabulary as pirate, so "
        f"the rise on sea questions starts near the top of the scale."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, default=None, help="pirate vector (+ .pairs.jsonl beside it); extracted when absent")
    parser.add_argument("--layer", type=int, default=25, help="steering layer (the demo's measured choice)")
    parser.add_argument("--coef", type=float, default=2.0)
    parser.add_argument("--n-questions", type=int, default=12, help="extraction questions for the pirate vector")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of the condition's training/held-out split")
    parser.add_argument("--margin", type=float, default=MARGIN, help="most the other questions' mean trait may rise (points)")
    parser.add_argument("--out", type=Path, default=Path("runs/conditional"))
    args = parser.parse_args()

    backbone, trait = load_model("smollm2-135m"), load_trait("pirate")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.vector or args.out / "pirate.safetensors"
    if not path.exists():
        vector, pairs = extract(backbone, trait, ExtractionSettings(n_questions=args.n_questions))
        vector.save(path)
        save_pairs(pairs, path.with_suffix(".pairs.jsonl"))
    vector = load_vector(path, backbone=backbone)
    pairs = [p for p in load_pairs(path.with_suffix(".pairs.jsonl")) if p.pos_answer.strip() and p.neg_answer.strip()]
    judges = make_judges("embed", trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs], question_groups(pairs))

    search = find_condition(backbone, read_prompts("sea"), read_prompts("other"), seed=args.seed, name="condition-sea")
    search.vector.save(args.out / "condition-sea.safetensors")
    chosen = search.chosen
    on_topic, off_topic = search.heldout
    prompts = on_topic + off_topic
    messages = [chat_prompt(p) for p in prompts]
    term = SteeringTerm(vector, args.layer, args.coef)
    fired: list[bool] = []
    kwargs = dict(max_new_tokens=args.max_new_tokens, batch_size=len(prompts))
    answers = {
        "no steering": generate(backbone, messages, **kwargs),
        f"pirate +{args.coef:g} (layer {args.layer}), always": generate(backbone, messages, steering=[term], **kwargs),
        f"pirate +{args.coef:g} (layer {args.layer}), if sea (layer {chosen.layer})": generate(
            backbone, messages, steering=[term], condition=search.condition, on_condition=lambda f, s: fired.extend(f.tolist()), **kwargs
        ),
    }
    n_on = len(on_topic)
    scores = {mode: judges.trait.score(prompts, texts) for mode, texts in answers.items()}
    rows = []
    for mode, values in scores.items():
        conditional = "if sea" in mode
        rows.append(
            {
                "steering": mode,
                "fires on sea questions": f"{sum(fired[:n_on])}/{n_on}" if conditional else ("all" if "always" in mode else "-"),
                "fires on other questions": f"{sum(fired[n_on:])}/{len(off_topic)}" if conditional else ("all" if "always" in mode else "-"),
                "pirate trait, sea questions": ci(values[:n_on]),
                "pirate trait, other questions": ci(values[n_on:]),
            }
        )
        print(rows[-1])
    base, cond = scores["no steering"], scores[list(scores)[2]]
    effect = conditional_effect([i < n_on for i in range(len(prompts))], fired, cond, base, prompts, margin=args.margin)
    settings = {
        "model": backbone.name,
        "vector": str(path),
        "vector_fingerprint": vector.fingerprint(),
        "layer": args.layer,
        "coef": args.coef,
        "max_new_tokens": args.max_new_tokens,
        "condition_layer": chosen.layer,
        "condition_threshold": chosen.threshold,
        "condition_cv_accuracy": chosen.cv_accuracy,
        "condition_heldout_accuracy": chosen.heldout_accuracy,
        "n_train": [len(t) for t in search.train],
        "n_heldout": [n_on, len(off_topic)],
        "judge_heldout_accuracy": judges.trait.heldout_accuracy,
        "paired_difference_sea": list(effect.rise_on),
        "paired_difference_other": list(effect.rise_off),
        "paired_difference_other_fired": list(effect.rise_off_fired),
        "n_fired_other": effect.n_fired_off,
        "rise_other_bound": effect.rise_off_bound,
        "margin": effect.margin,
        "scale": SCALE,
        "criteria": effect.criteria(),
        "trait": trait.name,
        "n_questions": args.n_questions,
        "firing_rate_sea": effect.fires_on,
        "firing_rate_other": effect.fires_off,
        "condition_method": search.vector.method,
        "condition_skip_prefix": search.condition.skip_prefix,
        "unsteered_trait_sea": sum(base[:n_on]) / n_on,
        "unsteered_trait_other": sum(base[n_on:]) / len(off_topic),
    }
    (args.out / "answers.json").write_text(
        json.dumps(
            {
                "prompts": prompts,
                "fired": fired,
                "answers": answers,
                "scores": scores,
                "layers": layer_table(search),
                "settings": settings,
            },
            indent=2,
        )
    )
    text = note(settings)
    print(text)
    print(
        write_section(
            "conditional_steering",
            "Conditional steering: pirate only on sea questions (SmolLM2-135M)",
            rows,
            text,
            data={"settings": settings, "condition_layers": layer_table(search)},
        )
    )


if __name__ == "__main__":
    main()
