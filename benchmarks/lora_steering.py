"""LoRA steering cost: throughput merged / unmerged / activation hook vs unsteered, and merge+restore time.

Run: .venv/bin/python benchmarks/lora_steering.py --direction runs/lora-pirate/diff --vector runs/demo-pirate/vector.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _table import write_section

from personactl import chat_prompt, load_model, load_trait, load_vector
from personactl.lora.compare import latencies
from personactl.lora.direction import LoRADirection, merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", type=Path, default=Path("runs/lora-pirate/diff"))
    parser.add_argument("--vector", type=Path, default=Path("runs/demo-pirate/vector.safetensors"))
    parser.add_argument("--layer", type=int, default=25)
    args = parser.parse_args()
    backbone = load_model("smollm2-135m")
    vector = load_vector(args.vector, backbone=backbone)
    direction = LoRADirection.load(args.direction)
    prompts = [chat_prompt(q) for q in load_trait("pirate").eval_questions[:8]]

    rows = [
        {"mode": t.mode, "tokens/s": t.tokens_per_second, "ratio to unsteered": t.ratio_to_unsteered}
        for t in latencies(backbone, prompts, vector, args.layer, args.direction, new_tokens=48, repeats=3)
    ]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        with merged(backbone, (direction, 1.0)):
            pass
        times.append(time.perf_counter() - start)
    note = (
        f"Merge + restore of all {len(direction.modules)} adapted modules (rank {direction.rank}, every layer): "
        f"best {min(times):.3f} s, median {sorted(times)[2]:.3f} s. 8 prompts x 48 forced new tokens, best of 3."
    )
    print(write_section("lora_steering", "Activation vs LoRA steering throughput (SmolLM2-135M)", rows, note))
    for r in rows:
        print(r)
    print(note)


if __name__ == "__main__":
    main()
