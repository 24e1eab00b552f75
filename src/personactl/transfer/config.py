"""The transfer experiment's settings, validated; the reference design's keys work as written.

Reference keys: source_model, target_model, layer_idx (or layer_map),
output_dir, persona_datasets ({name: {positive_texts, negative_texts}}, or
trait names), test_prompts, n_training_samples, lambda_values, alpha_values,
n_test_prompts, use_gpt4 (an OpenAI judge). Added: seed, judge, reduction,
texts, layer_correspondence, the generation settings and the diagnostics' scans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import TransferError, first_validation_error
from ..traits import AnyTrait, ContrastiveTexts, load_trait

GPT4_JUDGE = "openai:gpt-4.1-mini"


class PersonaTexts(BaseModel):
    """A persona given as texts that show it and texts that do not."""

    model_config = ConfigDict(extra="forbid")
    positive_texts: list[str] = Field(min_length=2)
    negative_texts: list[str] = Field(min_length=2)


class TransferConfig(BaseModel):
    """One source -> target transfer experiment."""

    model_config = ConfigDict(extra="forbid")

    source_model: str = "smollm2-135m"
    target_model: str = "gemma3-270m"
    layer_idx: int | None = Field(None, ge=1, description="source layer; default: 5/6 of the source depth")
    layer_map: dict[int, int] | None = Field(None, description="{source layer: target layer}; one entry")
    layer_correspondence: Literal["relative", "same"] = "relative"
    output_dir: str = "runs/transfer"
    persona_datasets: list[str] | dict[str, str | PersonaTexts] = Field(default_factory=lambda: ["pirate"])
    test_prompts: list[str] | None = Field(None, min_length=1, description="default: the trait's held-out questions")
    n_training_samples: int = Field(5000, ge=10, description="paired activations for the map")
    lambda_values: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    alpha_values: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0], min_length=1)
    n_test_prompts: int = Field(8, ge=1)
    use_gpt4: bool = False
    judge: str | None = Field(None, description="embed (default), openai:MODEL or local:MODEL")
    seed: int = 0
    reduction: Literal["last", "mean"] = "last"
    texts: str | None = Field(None, description="file of texts for the paired activations; default: the shipped corpus")
    extraction_questions: int = Field(12, ge=2)
    max_new_tokens: int = Field(40, ge=4)
    batch_size: int = Field(32, ge=1)
    layer_scan: int = Field(6, ge=2, description="target layers tried by diagnostic C")
    magnitude_scales: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0],
        min_length=2,
        description="diagnostic A: multiples of the oracle norm applied to both directions",
    )

    @field_validator("lambda_values", "magnitude_scales")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError("every value must be > 0")
        return values

    @model_validator(mode="after")
    def _one_layer_pair(self) -> TransferConfig:
        if self.layer_map is not None and len(self.layer_map) != 1:
            raise ValueError("layer_map takes one {source: target} entry")
        if self.layer_map is not None and self.layer_idx is not None and self.layer_idx not in self.layer_map:
            raise ValueError(f"layer_idx {self.layer_idx} is not a key of layer_map")
        return self

    @property
    def judge_spec(self) -> str:
        return self.judge or (GPT4_JUDGE if self.use_gpt4 else "embed")

    def traits(self) -> list[AnyTrait]:
        """The personas to transfer, as traits (built-in names, trait files or inline texts)."""
        if isinstance(self.persona_datasets, list):
            return [load_trait(name) for name in self.persona_datasets]
        traits: list[AnyTrait] = []
        for name, spec in self.persona_datasets.items():
            if isinstance(spec, str):
                traits.append(load_trait(spec))
            else:
                traits.append(ContrastiveTexts(name=name, **spec.model_dump()))
        return traits


def load_config(path: str | Path) -> TransferConfig:
    """TransferConfig from a JSON file, with a one-line error naming the bad key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TransferError(f"cannot read config {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TransferError(f"config {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    return validate_config(data, str(path))


def validate_config(data: Any, where: str = "config") -> TransferConfig:
    try:
        return TransferConfig.model_validate(data)
    except ValidationError as exc:
        raise TransferError(f"invalid transfer config {where}: {first_validation_error(exc)}") from exc
