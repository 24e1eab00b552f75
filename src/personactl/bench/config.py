"""What a bench compares and on which budget: one config per bench folder, refused if a resumed bench differs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..errors import BenchError, first_validation_error
from ..models import DEFAULT_MODEL
from .entries import DEFAULT_METHODS, ENTRIES


class BenchConfig(BaseModel):
    """Everything that defines a bench. Every method gets the same budget: the same tuning and evaluation
    questions, seeds, judge and answer length."""

    model: str = DEFAULT_MODEL
    traits: list[str] = Field(min_length=1, description="built-in trait names or trait files")
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS), min_length=1)
    judge: str = "embed"
    floor: float = Field(50.0, ge=0, le=100, description="mean coherence a tuned strength must keep on the tuning questions")
    extraction_questions: int = Field(16, ge=2, description="first N extraction questions extract the vector; the rest tune strengths")
    n_questions: int | None = Field(None, ge=1, description="first N evaluation questions are scored (default: all)")
    samples: int = Field(1, ge=1, description="answers per question and method")
    temperature: float = Field(0.0, ge=0.0)
    max_new_tokens: int = Field(48, ge=1)
    seed: int = 0
    batch_size: int = Field(32, ge=1)
    blend: int = Field(3, ge=2, description="layers the 'multilayer' method blends (auto:K)")
    adapter_epochs: int = Field(3, ge=1, description="epochs of the persona adapter on the trait's positive extraction answers")
    keep_unexpressed: bool = Field(False, description="bench traits the expressibility verdict calls not expressed (they are skipped by default)")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in ENTRIES]
        if unknown:
            raise ValueError(f"unknown bench method '{unknown[0]}': use some of {', '.join(ENTRIES)}")
        return ["none", *dict.fromkeys(m for m in value if m != "none")]  # the plain model is every comparison's baseline

    @field_validator("traits")
    @classmethod
    def _distinct_traits(cls, value: list[str]) -> list[str]:
        names = list(dict.fromkeys(t.strip() for t in value if t.strip()))
        if not names:
            raise ValueError("give at least one trait")
        return names


def bench_config(data: dict[str, Any]) -> BenchConfig:
    """BenchConfig from a mapping, with a one-line error."""
    try:
        return BenchConfig.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise BenchError(f"invalid bench config: {first_validation_error(exc)}") from exc
