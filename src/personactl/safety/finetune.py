"""Step 3: utility fine-tuning with the safety-critical weights frozen (full or LoRA), and its controls.

Full fine-tuning keeps the masked weights bit-identical (gradient hooks plus a
write-back after each AdamW step, verified before saving). With LoRA the base
weights are frozen anyway and the low-rank update may still change the
effective weights at masked positions: whether it routes around the frozen
neurons is what the dynamics step measures.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..lora.config import LoRATrainConfig
from ..lora.train import all_weights_trainable, check_out_dir, optimise, save_adapter, save_model, train_lora
from ..models import Backbone
from .data import Examples
from .freeze import frozen
from .masks import Tensors, mask_counts

# One epoch each, so the whole study fits in 30 minutes on 2 CPU cores (a full step of the 135M model is ~7 s there).
FULL_UTILITY = LoRATrainConfig(epochs=1, learning_rate=1e-4, batch_size=8, max_length=192)
LORA_UTILITY = LoRATrainConfig(
    rank=8, alpha=16.0, rslora=False, target_modules=("q_proj", "v_proj"), epochs=1, learning_rate=1e-3, batch_size=8, max_length=192
)
CARD_KIND = "safety fine-tune"


def frozen_finetune(
    backbone: Backbone,
    data: Examples,
    out_dir: str | Path,
    masks: Tensors | None,
    *,
    peft: bool,
    config: LoRATrainConfig | None = None,
    freeze_label: str = "safety",
) -> dict[str, Any]:
    """Fine-tune on `data` with `masks` frozen (None: nothing frozen); save a model folder (full) or adapter (peft).

    Raises FrozenWeightsChanged, before anything is saved, if a masked weight moved.
    Returns the card written beside the weights.
    """
    out = check_out_dir(out_dir)
    config = config or (LORA_UTILITY if peft else FULL_UTILITY)
    card: dict[str, Any] = {
        "kind": CARD_KIND,
        "base_model": backbone.name,
        "method": "lora" if peft else "full",
        "frozen": freeze_label if masks else "none",
        "frozen_weights": mask_counts(masks)["masked"] if masks else 0,
        "train": vars(config),
        "n_train": len(data.prompts),
    }
    with ExitStack() as stack:
        if not peft:
            stack.enter_context(all_weights_trainable(backbone))
        state = stack.enter_context(frozen(backbone, masks)) if masks else None
        if peft:
            model, losses = train_lora(backbone, data.prompts, data.answers, config)
            stack.callback(model.unload)  # type: ignore[attr-defined]
        else:
            model, losses = backbone.model, optimise(backbone.model, backbone, data.prompts, data.answers, config, "all weights").losses
        if state is not None:
            state.verify()
        card["losses"] = losses
        if peft:
            save_adapter(model, out, card)
        else:
            save_model(backbone, out, card)
    return card
