"""Method `lora` for sweeps: merge coef * dW into the weights, generate, restore."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..generation import chat_prompt, generate
from ..methods import MethodContext, MethodError, per_coefficient
from .adapters import resolve_adapter
from .direction import LoRADirection, merged


@dataclass
class LoRAMethod:
    """Weight-space steering W' = W + coef * dW; rows are grouped by coefficient (one merge each)."""

    ctx: MethodContext
    name: str = "lora"
    uses_layers: bool = False

    def __post_init__(self) -> None:
        folder = self.ctx.options.get(self.name)
        if not folder:
            raise MethodError(f"method '{self.name}' needs a LoRA: pass --{self.name} (a folder, or a registry name for adapters)")
        self.direction = LoRADirection.load(resolve_adapter(folder))
        self.direction.check_base(self.ctx.backbone)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: int | str, seeds: Sequence[int]) -> list[str]:
        s = self.ctx.settings

        def answer_rows(coef: float, rows: list[int]) -> list[str]:
            with merged(self.ctx.backbone, (self.direction, coef)):
                return generate(
                    self.ctx.backbone,
                    [chat_prompt(questions[i]) for i in rows],
                    max_new_tokens=s.max_new_tokens,
                    temperature=s.temperature,
                    seeds=[seeds[i] for i in rows],
                    batch_size=s.batch_size,
                )

        return per_coefficient(coefs, answer_rows)


@dataclass
class AdapterMethod(LoRAMethod):
    """A persona adapter at strength coef (1 = as trained, 0 = off), merged per coefficient."""

    name: str = "adapter"
