"""Screening training data vs trying it: `screen` (one batched greedy generation + one capture pass) against one epoch
of LoRA fine-tuning on the same samples, SmolLM2-135M.

The data are the shipped persona datasets (pirate_coder + formal_butler); the
vector is random (the cost does not depend on it). Target: screening <= 0.5x
one epoch.

Run: .venv/bin/python benchmarks/screening.py [--samples 320]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch
from _table import write_section

from personactl import Backbone, PersonaVector, load_model
from personactl.generation import chat_prompt, format_prompts
from personactl.lora.adapters import PersonaData, read_persona_data
from personactl.lora.config import LoRATrainConfig
from personactl.lora.finetune import finetune
from personactl.screening import AnswerCache, screen

TARGET = 0.5


def shipped_data(limit: int) -> PersonaData:
    folder = files("personactl") / "data" / "personas"
    parts = [read_persona_data(Path(str(folder / name))) for name in ("pirate_coder.jsonl", "formal_butler.jsonl")]
    questions = [q for p in parts for q in p.questions][:limit]
    answers = [a for p in parts for a in p.answers][:limit]
    return PersonaData(questions, answers)


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def random_vector_and_layer(backbone: Backbone) -> tuple[PersonaVector, int]:
    """A seeded random vector (the cost does not depend on it) and the screened layer, two thirds of the way up."""
    torch.manual_seed(0)
    return PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size), trait="random"), round(2 * backbone.n_layers / 3)


def one_lora_epoch(backbone: Backbone, data: PersonaData) -> tuple[float, int]:
    """(seconds, optimizer steps) of one LoRA epoch (rank 8, batch 8) on `data`, the adapter thrown away."""
    config = LoRATrainConfig(rank=8, alpha=16.0, epochs=1, batch_size=8, learning_rate=5e-4)
    prompts = format_prompts(backbone, [chat_prompt(q) for q in data.questions])
    with tempfile.TemporaryDirectory() as tmp:
        seconds, losses = timed(lambda: finetune(backbone, prompts, data.answers, Path(tmp) / "adapter", config))
    return seconds, len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=320)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    backbone = load_model("smollm2-135m")
    data = shipped_data(args.samples)
    vector, layer = random_vector_and_layer(backbone)
    cache = AnswerCache()
    screen(backbone, PersonaData(data.questions[:4], data.answers[:4]), vector, layer, max_new_tokens=8)  # warm up

    screen_s, _ = timed(lambda: screen(backbone, data, vector, layer, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, cache=cache))
    cached_s, _ = timed(lambda: screen(backbone, data, vector, layer, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, cache=cache))
    epoch_s, steps = one_lora_epoch(backbone, data)
    n = len(data.questions)
    rows = [
        {
            "step": f"screen (generate {args.max_new_tokens} tokens + capture), cold",
            "seconds": screen_s,
            "samples/s": n / screen_s,
            "ratio vs one LoRA epoch": screen_s / epoch_s,
        },
        {"step": "screen again, model answers cached", "seconds": cached_s, "samples/s": n / cached_s, "ratio vs one LoRA epoch": cached_s / epoch_s},
        {
            "step": f"one LoRA epoch (rank 8, batch 8, {steps} steps)",
            "seconds": epoch_s,
            "samples/s": n / epoch_s,
            "ratio vs one LoRA epoch": 1.0,
        },
    ]
    ratio = screen_s / epoch_s
    note = (
        f"{n} samples (the shipped persona datasets), generation batch {args.batch_size}; one run, 2 CPU cores. Target: a cold "
        f"screening <= {TARGET:g}x one epoch: {'met' if ratio <= TARGET else 'not met'} ({ratio:.2f}x). A cached re-screen "
        "(another vector or layer, or another dataset with the same prompts) costs only the capture pass."
    )
    print(write_section("screening", f"Screening {n} samples vs one LoRA epoch, SmolLM2-135M", rows, note))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
