"""Trait definitions: contrastive instructions, questions and a judge rubric.

Three shapes load from JSON or YAML:
- personactl's own (`instructions`, `questions`, `eval_questions`, `rubric`);
- the persona_vectors repository's (`instruction` pairs, `questions`,
  `eval_prompt`), whose last questions become the held-out evaluation set;
- plain contrastive texts (`positive_texts`, `negative_texts`), used as they
  are with no generation step.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .errors import TraitError, first_validation_error

MIN_PAIRS = 5
MIN_QUESTIONS = 20
MIN_EVAL_QUESTIONS = 10


class InstructionPair(BaseModel):
    """A positive and a negative system instruction for the same trait."""

    pos: str = Field(min_length=1, description="system prompt that elicits the trait")
    neg: str = Field(min_length=1, description="system prompt that suppresses it")


class Trait(BaseModel):
    """A trait to extract, steer and judge."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    instructions: list[InstructionPair] = Field(min_length=MIN_PAIRS)
    questions: list[str] = Field(min_length=MIN_QUESTIONS, description="extraction questions")
    eval_questions: list[str] = Field(min_length=MIN_EVAL_QUESTIONS, description="held-out questions")
    rubric: str = Field(description="judge prompt with {question} and {answer} placeholders")

    @field_validator("questions", "eval_questions")
    @classmethod
    def _no_blank_questions(cls, value: list[str]) -> list[str]:
        if any(not q.strip() for q in value):
            raise ValueError("questions must not be empty strings")
        return value

    @field_validator("rubric")
    @classmethod
    def _rubric_has_slots(cls, value: str) -> str:
        missing = [slot for slot in ("{question}", "{answer}") if slot not in value]
        if missing:
            raise ValueError(f"rubric lacks the placeholder(s) {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _held_out_is_disjoint(self) -> Trait:
        shared = set(self.questions) & set(self.eval_questions)
        if shared:
            raise ValueError(f"{len(shared)} evaluation question(s) also appear in the extraction questions")
        return self

    def judge_prompt(self, question: str, answer: str) -> str:
        """The rubric filled in for one answer."""
        return self.rubric.replace("{question}", question).replace("{answer}", answer)


class ContrastiveTexts(BaseModel):
    """A trait given directly as texts that show it and texts that do not."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    positive_texts: list[str] = Field(min_length=1)
    negative_texts: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_count(self) -> ContrastiveTexts:
        if len(self.positive_texts) != len(self.negative_texts):
            raise ValueError(f"{len(self.positive_texts)} positive vs {len(self.negative_texts)} negative texts: give one negative per positive")
        return self


class TraitSketch(BaseModel):
    """A quick trait for extraction only (e.g. defined in the web page): a few instruction pairs and questions,
    without the held-out questions and rubric that an evaluation needs."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    instructions: list[InstructionPair] = Field(min_length=1)
    questions: list[str] = Field(min_length=2)


AnyTrait = Trait | ContrastiveTexts | TraitSketch


def builtin_traits() -> list[str]:
    """Names of the traits that ship with personactl."""
    folder = files("personactl") / "data" / "traits"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_trait(name_or_path: str | Path) -> AnyTrait:
    """Load a built-in trait by name, or any trait file (JSON/YAML) by path."""
    path = Path(name_or_path)
    if str(name_or_path) in builtin_traits():
        path = Path(str(files("personactl") / "data" / "traits" / f"{name_or_path}.json"))
    elif not path.is_file():
        raise TraitError(f"no trait '{name_or_path}': use a built-in ({', '.join(builtin_traits())}) or a JSON/YAML file path")
    return parse_trait(_read_mapping(path), default_name=path.stem, source=str(path))


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TraitError(f"cannot read trait file {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise TraitError(f"trait file {path} must hold a mapping (JSON object), not {type(data).__name__}")
    return data


def parse_trait(data: dict[str, Any], *, default_name: str = "trait", source: str = "<dict>") -> AnyTrait:
    """Validate a trait mapping in any of the three accepted shapes."""
    data = dict(data)
    data.setdefault("name", default_name)
    try:
        if "positive_texts" in data or "negative_texts" in data:
            return ContrastiveTexts.model_validate(data)
        if "instruction" in data and "instructions" not in data:
            data = _from_persona_vectors(data)
        return Trait.model_validate(data)
    except ValidationError as exc:
        raise TraitError(f"invalid trait {source}: {first_validation_error(exc, 'file')}") from exc


def _from_persona_vectors(data: dict[str, Any]) -> dict[str, Any]:
    """Convert the persona_vectors repository's trait file to this schema.

    That format has one question list. Held out for evaluation are the
    `eval_questions` when the file has them (as `traits generate` writes them;
    they are then left out of the extraction questions), otherwise its last
    MIN_EVAL_QUESTIONS questions (or a quarter, if more).
    """
    questions = list(data.get("questions", []))
    held_out = data.get("eval_questions")
    if held_out:
        extraction = [q for q in questions if q not in set(held_out)]
    else:
        n_eval = max(MIN_EVAL_QUESTIONS, len(questions) // 4)
        extraction, held_out = (questions[:-n_eval] if len(questions) > n_eval else questions), questions[-n_eval:]
    return {
        "name": data["name"],
        "description": data.get("description", ""),
        "instructions": data["instruction"],
        "questions": extraction,
        "eval_questions": held_out,
        "rubric": str(data.get("eval_prompt", "")),
    }
