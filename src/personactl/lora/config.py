"""Settings of LoRA training, each field documented where it is declared (as PEFT does)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PersonactlError


@dataclass(frozen=True)
class LoRATrainConfig:
    """How a persona LoRA is trained. Defaults follow the reference setup.

    On a CPU with the embedded 135M model, `rank=8, alpha=16, max_steps=60`
    trains in about a minute and already carries the persona.
    """

    rank: int = field(default=32, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=64.0, metadata={"help": "LoRA alpha; scaling = alpha/sqrt(r) with rsLoRA"})
    rslora: bool = field(default=True, metadata={"help": "rank-stabilised scaling alpha/sqrt(r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: str | tuple[str, ...] = field(default="all-linear", metadata={"help": "'all-linear' or module names"})
    epochs: int = field(default=1, metadata={"help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps in all"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass (micro-batch)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step (effective batch = batch_size x grad_accum)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward: less memory, more time"})
    checkpoint_every: int = field(default=20, metadata={"help": "optimiser steps between resumable checkpoints (and at each epoch end)"})
    max_length: int = field(default=256, metadata={"help": "tokens per example (prompt + answer), truncated"})
    seed: int = field(default=0, metadata={"help": "initialisation and shuffling seed"})

    def __post_init__(self) -> None:
        for name in ("rank", "epochs", "batch_size", "grad_accum", "checkpoint_every", "max_length"):
            if getattr(self, name) < 1:
                raise PersonactlError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise PersonactlError(f"max_steps must be at least 1, got {self.max_steps}: leave it out to train every epoch to the end")
