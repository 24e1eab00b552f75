"""A K=5 coefficient sweep: K separate runs, one batch with per-row coefficients, and one batch with a shared prefill.

Run: .venv/bin/python benchmarks/sweep_batching.py
Every side generates the same rows (12 held-out questions x 5 coefficients,
greedy, 32 new tokens, `response` positions) with the same batch size limit.
The sides run in turn, twice, and each keeps its faster time; the breakdown
times the prefill alone, so the rest of a run is decoding.
"""

from __future__ import annotations

import time
from unittest import mock

import torch
from _table import write_section

from personactl import SteeringTerm, chat_prompt, extract, generate, generation, load_model, load_trait
from personactl.activations import make_batch, position_ids
from personactl.extraction import ExtractionSettings

COEFS = [-2.0, -1.0, 0.0, 1.0, 2.0]
LAYER = 20
NEW_TOKENS = 32


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@torch.no_grad()
def full_prefill(backbone, texts) -> None:
    batch = make_batch(backbone, texts)
    backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids(batch.attention_mask), logits_to_keep=1)


def main() -> None:
    backbone = load_model("smollm2-135m")
    trait = load_trait("pirate")
    vector, _ = extract(backbone, trait, ExtractionSettings(n_questions=4, max_new_tokens=24))
    questions = [chat_prompt(q) for q in trait.eval_questions]
    prompts = [q for q in questions for _ in COEFS]
    coefs = [c for _ in questions for c in COEFS]
    kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, batch_size=64)
    term = SteeringTerm(vector, LAYER, coefs, positions="response")

    def separate():
        return [generate(backbone, questions, steering=[SteeringTerm(vector, LAYER, c, positions="response")], **kwargs) for c in COEFS]

    def batched():
        with mock.patch.object(generation, "shares_prefill", lambda *a: False):
            return generate(backbone, prompts, steering=[term], **kwargs)

    def shared():
        return generate(backbone, prompts, steering=[term], **kwargs)

    sides = {"separate": separate, "batched": batched, "shared": shared}
    times: dict[str, float] = {}
    answers = {}
    for _ in range(2):
        for name, fn in sides.items():
            seconds, answers[name] = timed(fn)
            times[name] = min(times.get(name, float("inf")), seconds)
    texts = generation.format_prompts(backbone, prompts)
    t_full = min(timed(lambda: full_prefill(backbone, texts))[0] for _ in range(3))
    t_prefix = min(timed(lambda: generation.shared_prefill(backbone, texts))[0] for _ in range(3))

    flat_separate = [answers["separate"][k][i] for i in range(len(questions)) for k in range(len(COEFS))]
    same_shared = sum(a == b for a, b in zip(answers["shared"], flat_separate))
    same_batched = sum(a == b for a, b in zip(answers["batched"], flat_separate))
    label = f"K={len(COEFS)} coefficients x {len(questions)} questions"
    rows = [
        {"sweep": f"{label}: K separate runs", "seconds": times["separate"], "prefill seconds": "-", "speed-up": 1.0},
        {
            "sweep": f"{label}: one batch, per-row coefficients",
            "seconds": times["batched"],
            "prefill seconds": t_full,
            "speed-up": times["separate"] / times["batched"],
        },
        {
            "sweep": f"{label}: one batch, prefill shared across coefficients",
            "seconds": times["shared"],
            "prefill seconds": t_prefix,
            "speed-up": times["separate"] / times["shared"],
        },
    ]
    note = (
        f"`response` positions, {NEW_TOKENS} new tokens per row, best of 2 interleaved rounds. Prefill seconds: the prompt "
        f"forward alone ({len(prompts)} full prompts for the plain batch; {len(questions)} distinct prompts but their last "
        "token, plus the cache copy, for the shared one); the rest of each run is decoding, which both batches share. "
        f"Answers identical to the separate runs: shared prefill {same_shared}/{len(prompts)}, plain batch "
        f"{same_batched}/{len(prompts)} (padding in a larger batch may flip a near-tie token)."
    )
    print(write_section("sweep_batching", "Coefficient sweep: separate runs, one batch, shared prefill (SmolLM2-135M)", rows, note))
    for r in rows:
        print(r)
    print(note)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
