"""The team-written safety data: harmful requests with refusals, benign instructions with helpful answers.

Requests name a harmful goal only at a high level; no shipped text holds
operational harmful content. Each set has a training split (alignment,
calibration, utility fine-tuning) and a held-out split (every measurement).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

from ..generation import chat_prompt, format_prompts
from ..lora.adapters import PersonaData, read_persona_data
from ..models import Backbone

Split = Literal["harmful_train", "harmful_heldout", "benign_train", "benign_heldout"]
SPLITS: tuple[Split, ...] = get_args(Split)


def builtin_path(split: Split) -> Path:
    """The packaged JSONL file of one split."""
    return Path(str(resources.files("personactl") / "data" / "safety" / f"{split}.jsonl"))


def load_examples(source: str | Path) -> PersonaData:
    """A split name (harmful_train, ...) or a JSONL file of {"instruction", "output"}; bad lines name their number."""
    name = str(source)
    return read_persona_data(builtin_path(name) if name in SPLITS else Path(source))


@dataclass(frozen=True)
class Examples:
    """Chat-formatted prompts with their answers, ready for training, scoring or generation."""

    questions: list[str]
    prompts: list[str]
    answers: list[str]

    def head(self, n: int | None) -> Examples:
        return self if n is None else Examples(self.questions[:n], self.prompts[:n], self.answers[:n])

    def __add__(self, other: Examples) -> Examples:
        return Examples(self.questions + other.questions, self.prompts + other.prompts, self.answers + other.answers)


def chat_examples(backbone: Backbone, source: str | Path | PersonaData) -> Examples:
    """Examples of a split or file as this model's chat prompts (one user turn, no system prompt)."""
    data = source if isinstance(source, PersonaData) else load_examples(source)
    prompts = format_prompts(backbone, [chat_prompt(q) for q in data.questions])
    return Examples(list(data.questions), prompts, list(data.answers))
