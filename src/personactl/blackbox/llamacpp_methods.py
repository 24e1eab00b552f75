"""The llama.cpp sweep methods: `llamacpp-vector`, `llamacpp-lora`, `llamacpp-adapter` and `llamacpp-prompt`.

They are the HF methods' twins on the llama.cpp backend (`backends.py` maps
`--backend llamacpp` onto them) and share one backend per (model, context size).
A control vector or LoRA scale belongs to the context, so each runs one pass per coefficient.
"""

from __future__ import annotations

import atexit
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..methods import LayerSpec, MethodContext, MethodError, PromptMethod, per_coefficient
from .llamacpp import LlamaCppBackend, context_size
from .llamacpp_controls import Control
from .llamacpp_files import LlamaCppError, lora_gguf


@functools.lru_cache(maxsize=2)
def shared_backend(spec: str, n_ctx: int, seed: int = 0) -> LlamaCppBackend:
    """One backend per (model, context size), shared by the llama.cpp methods of a sweep."""
    return LlamaCppBackend(spec, n_ctx=n_ctx, seed=seed)


# Free the shared models while Python is still whole: llama.cpp's own destructor fails during interpreter teardown.
atexit.register(shared_backend.cache_clear)


def _backend_for(ctx: MethodContext) -> LlamaCppBackend:
    spec = ctx.options.get("model") or ctx.backbone.name
    backend = shared_backend(str(spec), context_size(ctx.settings.max_new_tokens), ctx.settings.seed)
    if backend.hidden_size != ctx.backbone.hidden_size or backend.n_layers != ctx.backbone.n_layers:
        raise LlamaCppError(
            f"the GGUF model {backend.path} ({backend.n_layers} x {backend.hidden_size}) is not the sweep's model "
            f"{ctx.backbone.name} ({ctx.backbone.n_layers} x {ctx.backbone.hidden_size})"
        )
    return backend


@dataclass
class LlamaCppVectorMethod:
    """Method `vector` on llama.cpp: the persona vector as a control vector at the layer (or blend), one pass per coefficient."""

    ctx: MethodContext
    name: str = "llamacpp-vector"
    uses_layers: bool = True
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        if self.ctx.vector is None:
            raise MethodError(f"method '{self.name}' needs a persona vector: pass --vector or let the sweep extract one")
        self.backend = _backend_for(self.ctx)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415

        if isinstance(layer, str):
            if layer not in self.ctx.blends:
                raise MethodError(f"no weights for the layer blend '{layer}': resolve it with experiment.choose_layers first")
            layers: int | dict[int, float] = dict(self.ctx.blends[layer])
        else:
            layers = int(layer)
        s = self.ctx.settings

        def answer_rows(coef: float, rows: list[int]) -> list[str]:
            controls = [Control(self.ctx.vector, layers, coef, self.ctx.positions)] if coef != 0 else []  # type: ignore[arg-type]
            return self.backend.generate(
                [chat_prompt(questions[i]) for i in rows],
                controls=controls,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                seeds=[seeds[i] for i in rows],
            )

        return per_coefficient(coefs, answer_rows)


@dataclass
class LlamaCppLoRAMethod:
    """Method `lora` on llama.cpp: the LoRA direction as a GGUF LoRA at scale coef (W + coef * dW), one pass per coefficient."""

    ctx: MethodContext
    name: str = "llamacpp-lora"
    uses_layers: bool = False
    option: str = "lora"
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        source = self.ctx.options.get(self.option)
        if not source:
            raise MethodError(f"method '{self.name}' needs --{self.option} (a LoRA .gguf file, a folder or, for adapters, a registry name)")
        self.backend = _backend_for(self.ctx)
        self.path = lora_gguf(source, self.backend, self.ctx.backbone)
        self.backend.load_lora(self.path)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415

        s = self.ctx.settings

        def answer_rows(coef: float, rows: list[int]) -> list[str]:
            with self.backend.steered(loras=[(self.path, coef)] if coef != 0 else []):
                return self.backend.generate(
                    [chat_prompt(questions[i]) for i in rows],
                    max_new_tokens=s.max_new_tokens,
                    temperature=s.temperature,
                    seeds=[seeds[i] for i in rows],
                )

        return per_coefficient(coefs, answer_rows)


@dataclass
class LlamaCppAdapterMethod(LlamaCppLoRAMethod):
    """Method `adapter` on llama.cpp: a persona adapter at strength coef (1 = as trained, 0 = off)."""

    name: str = "llamacpp-adapter"
    option: str = "adapter"


@dataclass
class LlamaCppPromptMethod:
    """Method `prompt` on llama.cpp: the system-prompt baseline (same instructions as `prompt`)."""

    ctx: MethodContext
    name: str = "llamacpp-prompt"
    uses_layers: bool = False
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        self.backend = _backend_for(self.ctx)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415
        from ..traits import Trait  # noqa: PLC0415

        trait = self.ctx.trait
        if not isinstance(trait, Trait):
            raise MethodError(f"method '{self.name}' needs a trait with instructions, not plain contrastive texts")
        s = self.ctx.settings
        prompts = [chat_prompt(q, PromptMethod.instruction(trait, c)) for q, c in zip(questions, coefs)]
        return self.backend.generate(prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature, seeds=seeds)
