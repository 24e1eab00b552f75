"""Runtime (unmerged) LoRA steering: PEFT layers injected, the coefficient set through their scale.

Changing the coefficient costs nothing (no weight rewrite), at the price of the
extra LoRA matmuls in every forward. On exit the layers are unloaded and the
base model is as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..models import Backbone
from .direction import LoRADirection

ADAPTER = "persona"


@dataclass
class RuntimeLoRA:
    """Handle on the injected layers; `set_coef` rescales every one of them."""

    layers: list
    coef: float = 1.0

    def set_coef(self, coef: float) -> None:
        for layer in self.layers:
            layer.set_scale(ADAPTER, coef)
        self.coef = coef


@contextmanager
def runtime(backbone: Backbone, folder: str | Path, coef: float = 1.0) -> Iterator[RuntimeLoRA]:
    """Inject the adapter in `folder` unmerged with scale `coef`; unload on exit, exceptions included."""
    from peft import PeftModel  # noqa: PLC0415
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415

    LoRADirection.load(folder).check_base(backbone)
    peft_model = PeftModel.from_pretrained(backbone.model, str(folder), adapter_name=ADAPTER)
    try:
        handle = RuntimeLoRA([m for m in peft_model.modules() if isinstance(m, LoraLayer)])
        handle.set_coef(coef)
        yield handle
    finally:
        peft_model.unload()
