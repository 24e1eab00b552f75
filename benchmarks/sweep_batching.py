"""A K=5 coefficient sweep in one batch (per-row coefficients) vs K separate runs.

Run: .venv/bin/python benchmarks/sweep_batching.py
Both sides generate the same rows (12 held-out questions x 5 coefficients,
greedy, 32 new tokens) with the same batch size limit.
"""

from __future__ import annotations

import time

import torch

from _table import write_section
from personactl import SteeringTerm, chat_prompt, extract, generate, load_model, load_trait
from personactl.extraction import ExtractionSettings

COEFS = [-2.0, -1.0, 0.0, 1.0, 2.0]
LAYER = 20


def main() -> None:
    backbone = load_model("smollm2-135m")
    trait = load_trait("pirate")
    vector, _ = extract(backbone, trait, ExtractionSettings(n_questions=4, max_new_tokens=24))
    questions = [chat_prompt(q) for q in trait.eval_questions]
    kwargs = dict(max_new_tokens=32, batch_size=64)

    start = time.perf_counter()
    prompts = [q for q in questions for _ in COEFS]
    coefs = [c for _ in questions for c in COEFS]
    batched = generate(backbone, prompts, steering=[SteeringTerm(vector, LAYER, coefs)], **kwargs)
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    separate = [generate(backbone, questions, steering=[SteeringTerm(vector, LAYER, c)], **kwargs) for c in COEFS]
    t_separate = time.perf_counter() - start

    same = sum(batched[i * len(COEFS) + k] == separate[k][i] for i in range(len(questions)) for k in range(len(COEFS)))
    rows = [
        {"sweep": f"K={len(COEFS)} coefficients x {len(questions)} questions, one batch", "seconds": t_batched, "speed-up": t_separate / t_batched},
        {"sweep": f"K={len(COEFS)} separate runs of {len(questions)} questions", "seconds": t_separate, "speed-up": 1.0},
    ]
    note = f"Identical greedy answers in both: {same}/{len(batched)} (padding in a larger batch may flip a near-tie token)."
    print(write_section("sweep_batching", "Coefficient sweep: one batch with per-row coefficients vs separate runs (SmolLM2-135M)", rows, note))
    for r in rows:
        print(r)
    print(note)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
