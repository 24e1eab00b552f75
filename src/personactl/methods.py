"""Steering methods a sweep can compare: each turns (questions, coefficients, layer) into answers.

A method is anything with a `name`, a `uses_layers` flag and
`generate(questions, coefs, layer, seeds) -> answers`, where `coefs` and
`seeds` hold one value per question row, so a whole sweep runs as one batch
and each row samples from its own seed. `layer` is a layer index, or the label
of a multi-layer blend ("auto:K") whose weights the context holds. Later
packages register more (LoRA directions, transferred vectors, adapters) with
`register_method`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .capping import DEFAULT_CAP, cap_term
from .errors import PersonactlError
from .generation import chat_prompt, generate
from .models import Backbone
from .steering import SteeringTerm, StepPositions, weighted_terms
from .traits import AnyTrait, Trait
from .vectors import PersonaVector


class MethodError(PersonactlError):
    """An unknown or unusable steering method."""


@dataclass(frozen=True)
class GenerationSettings:
    """How every method generates, so methods compare on equal terms."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 32


LayerSpec = int | str  # a layer, or a blend's label ("auto:K") looked up in MethodContext.blends


class SteeringMethod(Protocol):
    name: str
    uses_layers: bool

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]: ...


@dataclass
class MethodContext:
    """What a method factory may need."""

    backbone: Backbone
    trait: AnyTrait
    vector: PersonaVector | None
    settings: GenerationSettings
    positions: StepPositions = "all"
    options: dict[str, str] = field(default_factory=dict)  # method-specific inputs, e.g. {"lora": DIR, "adapter": NAME}
    blends: dict[str, dict[int, float]] = field(default_factory=dict)  # "auto:K" -> {layer: weight}, weights summing to 1
    pairs: list = field(default_factory=list)  # the vector's extraction answers (ContrastivePair), for fewshot and modulation


def steered_answers(ctx: MethodContext, questions: Sequence[str], terms: Sequence[SteeringTerm], seeds: Sequence[int]) -> list[str]:
    """Answers to `questions` under `terms`, generated with the context's settings (what every method shares)."""
    s = ctx.settings
    return generate(
        ctx.backbone,
        [chat_prompt(q) for q in questions],
        steering=terms,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        seeds=seeds,
        batch_size=s.batch_size,
    )


@dataclass
class VectorMethod:
    """Activation steering h' = h + coef * v[layer], one coefficient per row; for a blend
    ("auto:K") h'_l = h_l + coef * w_l * v[l] at each of its layers."""

    ctx: MethodContext
    name: str = "vector"
    uses_layers: bool = True

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        if self.ctx.vector is None:
            raise MethodError("method 'vector' needs a persona vector: pass --vector or let the sweep extract one")
        if isinstance(layer, str):
            if layer not in self.ctx.blends:
                raise MethodError(f"no weights for the layer blend '{layer}': resolve it with experiment.choose_layers first")
            terms = weighted_terms(self.ctx.vector, self.ctx.blends[layer], list(coefs), positions=self.ctx.positions)
        else:
            terms = [SteeringTerm(self.ctx.vector, layer, list(coefs), positions=self.ctx.positions)]
        return steered_answers(self.ctx, questions, terms, seeds)


@dataclass
class CapMethod:
    """Activation capping: each row's coefficient is the cap's strength (0 = none, 1 = the projection clamped into the
    range); the range is `ctx.options["cap_at"]` (default neg-p90, see `capping`). A blend ("auto:K") caps at each of
    its layers, unweighted."""

    ctx: MethodContext
    name: str = "cap"
    uses_layers: bool = True

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        if self.ctx.vector is None:
            raise MethodError("method 'cap' needs a persona vector: pass --vector or let the sweep extract one")
        outside = sorted({c for c in coefs if not 0 <= c <= 1})
        if outside:
            raise MethodError(f"method 'cap' takes strengths in [0, 1] as coefficients, not {outside[0]:g}: run it with e.g. --coefs 0,1")
        if isinstance(layer, str) and layer not in self.ctx.blends:
            raise MethodError(f"no layers for the blend '{layer}': resolve it with experiment.choose_layers first")
        band = list(self.ctx.blends[layer]) if isinstance(layer, str) else [layer]
        term = cap_term(self.ctx.vector, band, self.ctx.options.get("cap_at") or DEFAULT_CAP, list(coefs), self.ctx.positions)
        return steered_answers(self.ctx, questions, [term], seeds)


@dataclass
class PromptMethod:
    """The system-prompt persona as a baseline: coef > 0 uses a positive instruction,
    coef < 0 a negative one, 0 none; |coef| picks which instruction pair (cycled)."""

    ctx: MethodContext
    name: str = "prompt"
    uses_layers: bool = False

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        trait = self.ctx.trait
        if not isinstance(trait, Trait):
            raise MethodError("method 'prompt' needs a trait with instructions, not plain contrastive texts")
        s = self.ctx.settings
        prompts = [chat_prompt(q, self.instruction(trait, c)) for q, c in zip(questions, coefs)]
        return generate(self.ctx.backbone, prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature, seeds=seeds, batch_size=s.batch_size)

    @staticmethod
    def instruction(trait: Trait, coef: float) -> str | None:
        """The system instruction at `coef` (None at 0)."""
        if coef == 0:
            return None
        pair = trait.instructions[(max(1, round(abs(coef))) - 1) % len(trait.instructions)]
        return pair.pos if coef > 0 else pair.neg


def per_coefficient(coefs: Sequence[float], answer_rows: Callable[[float, list[int]], list[str]]) -> list[str]:
    """Answers in row order for a method whose steering is one setting per pass (merged weights, a llama.cpp
    control vector or LoRA): `answer_rows(coef, rows)` answers the rows of each distinct coefficient."""
    answers = [""] * len(coefs)
    for coef in sorted(set(coefs)):
        rows = [i for i, c in enumerate(coefs) if c == coef]
        for i, answer in zip(rows, answer_rows(coef, rows)):
            answers[i] = answer
    return answers


MethodFactory = Callable[[MethodContext], SteeringMethod]
# A factory, or "module:attribute" imported on first use (sub-packages stay optional imports).
_REGISTRY: dict[str, MethodFactory | str] = {
    "vector": VectorMethod,
    "cap": CapMethod,
    "prompt": PromptMethod,
    "lora": "personactl.lora.method:LoRAMethod",
    "adapter": "personactl.lora.method:AdapterMethod",
    "modulation": "personactl.blackbox.modulation:ModulationMethod",
    "api-prompt": "personactl.blackbox.modulation:ApiPromptMethod",
    "fewshot": "personactl.blackbox.fewshot:FewShotMethod",
    # the HF methods' twins on llama.cpp (a GGUF model); `--backend llamacpp` maps vector, lora, adapter, prompt onto them
    "llamacpp-vector": "personactl.blackbox.llamacpp_methods:LlamaCppVectorMethod",
    "llamacpp-lora": "personactl.blackbox.llamacpp_methods:LlamaCppLoRAMethod",
    "llamacpp-adapter": "personactl.blackbox.llamacpp_methods:LlamaCppAdapterMethod",
    "llamacpp-prompt": "personactl.blackbox.llamacpp_methods:LlamaCppPromptMethod",
}


def register_method(name: str, factory: MethodFactory | str) -> None:
    """Make `name` available to sweeps (`--methods name`)."""
    _REGISTRY[name] = factory


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def make_method(name: str, ctx: MethodContext) -> SteeringMethod:
    if name not in _REGISTRY:
        raise MethodError(f"unknown method '{name}': use one of {', '.join(available_methods())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(ctx)
