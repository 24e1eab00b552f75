"""Fine-tuning with preventative steering (Chen et al.): steer during training, remove it after.

Adding the persona vector in the activations (or pre-merging a persona
direction into the weights) while fine-tuning on trait-inducing data lets the
optimiser reach low loss without writing the trait into the adapter; both are
removed when training ends, so the saved adapter carries less of the trait.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from ..models import Backbone
from ..steering import SteeringTerm, steer
from .config import LoRATrainConfig
from .direction import AdapterError, LoRADirection, merged
from .train import train_full, train_lora


def finetune(
    backbone: Backbone,
    prompts: Sequence[str],
    answers: Sequence[str],
    out_dir: str | Path,
    config: LoRATrainConfig = LoRATrainConfig(),
    *,
    steering: Sequence[SteeringTerm] = (),
    premerge: Sequence[tuple[LoRADirection, float]] = (),
    metadata: dict | None = None,
    full: bool = False,
) -> list[float]:
    """LoRA (or, with `full`, all-weight) fine-tuning of formatted prompts -> answers,
    with optional preventative steering.

    The adapter (or the whole model folder) is saved to `out_dir`; the steering
    hooks and the pre-merged weights are gone when this returns, and the base
    model is as before.
    """
    info = {
        **(metadata or {}),
        "preventative": {
            "steering": [{"trait": getattr(t.vector, "trait", "tensor"), "layers": t.layer_list(), "coef": t.coef, "op": t.op} for t in steering],
            "premerge": [{"trait": d.metadata.get("trait"), "coef": c} for d, c in premerge],
        },
    }
    with ExitStack() as stack:
        if steering:
            stack.enter_context(steer(backbone, *steering))
        if premerge:
            stack.enter_context(merged(backbone, *premerge))
        if full:
            if premerge:
                raise AdapterError("full fine-tuning with --premerge-lora is not supported: use LoRA fine-tuning or --steer-vector")
            return train_full(backbone, prompts, answers, out_dir, config, metadata=info)
        model, losses = train_lora(backbone, prompts, answers, config, out_dir=out_dir, metadata=info)
        model.unload()  # type: ignore[attr-defined]
    return losses
