"""All-layer capture: backbone only (personactl) vs the full LM forward with logits.

Run: .venv/bin/python benchmarks/capture_without_logits.py
"""

from __future__ import annotations

import torch
from _table import best_of, write_section

from personactl import activations, chat_prompt, load_model, load_trait
from personactl.generation import format_prompts


def main() -> None:
    backbone = load_model("smollm2-135m")
    trait = load_trait("pirate")
    prompts = format_prompts(backbone, [chat_prompt(q, trait.instructions[0].pos) for q in trait.questions[:16]])
    answers = ["Arr, matey, ye be askin' a fine question about the sea and me ship and all the treasure."] * 16
    batch = activations.make_batch(backbone, prompts, answers)

    def backbone_only():
        activations.hidden_states(backbone, batch.input_ids, batch.attention_mask)

    @torch.no_grad()
    def with_logits():
        backbone.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_hidden_states=True,
            use_cache=False,
        )

    backbone_only(), with_logits()  # warm up
    ours, full = best_of(backbone_only), best_of(with_logits)
    rows = [
        {"forward": "backbone only (personactl)", "seconds": ours, "ratio vs ours": 1.0},
        {"forward": "full LM with logits", "seconds": full, "ratio vs ours": full / ours},
    ]
    print(write_section("capture", f"All-layer capture, 16 texts x {batch.input_ids.shape[1]} tokens, SmolLM2-135M", rows))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
