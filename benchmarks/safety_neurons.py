"""Safety neurons: Wanda scoring of every block linear layer vs one plain forward over the same tokens,
and a full fine-tuning step with 3% of the weights frozen vs an unmasked step (SmolLM2-135M).

Targets: scoring <= 1.5x one forward pass (one pass with hooks, not one per layer);
masked step <= 1.1x an unmasked one.
Run: .venv/bin/python benchmarks/safety_neurons.py
"""

from __future__ import annotations

import time

import torch
from _table import best_of, write_section

from personactl import load_model
from personactl.activations import make_batch, position_ids
from personactl.lora.config import LoRATrainConfig
from personactl.lora.train import all_weights_trainable, optimise
from personactl.safety import frozen, input_norms, scores_from_norms, top_fraction
from personactl.safety.identify import calibration

BATCH = 16


def main() -> None:
    backbone = load_model("smollm2-135m")
    prompts, answers = calibration(backbone, "harmful_train", 128)
    batches = [make_batch(backbone, prompts[s : s + BATCH], answers[s : s + BATCH]) for s in range(0, len(prompts), BATCH)]
    tokens = sum(int(b.response_mask.sum()) for b in batches)

    @torch.no_grad()
    def plain_forward():
        for b in batches:
            backbone.model.base_model(
                input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=position_ids(b.attention_mask), use_cache=False
            )

    def scoring():
        scores_from_norms(backbone, input_norms(backbone, prompts, answers, batch_size=BATCH)[0])

    plain_forward(), scoring()  # warm up
    forward_s, scoring_s = best_of(plain_forward), best_of(scoring)

    masks = top_fraction(scores_from_norms(backbone, input_norms(backbone, prompts, answers)[0]), 0.03)
    config = LoRATrainConfig(batch_size=8, max_steps=2, learning_rate=1e-5, checkpoint_every=1000)
    train_prompts, train_answers = prompts[:16], answers[:16]

    def step_time(masked: bool) -> float:
        with all_weights_trainable(backbone):
            start = time.perf_counter()
            if masked:
                with frozen(backbone, masks) as state:
                    optimise(backbone.model, backbone, train_prompts, train_answers, config, "masked")
                    state.verify()
            else:
                optimise(backbone.model, backbone, train_prompts, train_answers, config, "unmasked")
            return (time.perf_counter() - start) / config.max_steps

    step_time(False)  # warm up
    rounds = [(step_time(False), step_time(True)) for _ in range(2)]  # interleaved, best of each
    unmasked_s, masked_s = min(r[0] for r in rounds), min(r[1] for r in rounds)
    masked_count = sum(int(m.sum()) for m in masks.values())
    rows = [
        {"work": f"one forward, no logits ({len(prompts)} examples, batches of {BATCH})", "seconds": forward_s, "ratio": 1.0, "target": ""},
        {
            "work": f"Wanda scores of all {len(masks)} block linear layers (hooks, same pass)",
            "seconds": scoring_s,
            "ratio": scoring_s / forward_s,
            "target": "<= 1.5x",
        },
        {"work": "full fine-tuning step (8 examples), nothing frozen", "seconds": unmasked_s, "ratio": 1.0, "target": ""},
        {"work": f"same step, {masked_count} weights (3%) frozen", "seconds": masked_s, "ratio": masked_s / unmasked_s, "target": "<= 1.1x"},
    ]
    note = (
        f"Scoring sums x^2 over the {tokens} answer tokens in forward pre-hooks during one pass without the LM head; "
        "freezing costs a gradient mask per weight matrix and a write-back of the frozen entries after each AdamW step. "
        "Steps: best of 2 interleaved rounds of 2 steps."
    )
    print(write_section("safety_neurons", "Safety neurons: Wanda scoring and frozen fine-tuning cost (SmolLM2-135M)", rows, note))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
