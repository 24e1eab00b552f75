"""Each method's strength, chosen on the tuning questions by one rule, so no method is tuned on the scored questions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..intervals import group_means
from .entries import Entry


@dataclass
class Choice:
    """The strength a method is scored at, what it measured on the tuning questions, and every strength tried."""

    label: str
    coef: float
    trait: float  # mean over tuning questions at the chosen strength
    coherence: float
    meets_floor: bool
    tried: list[dict[str, float]] = field(default_factory=list)  # {coef, trait, coherence} per strength

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Choice:
        return cls(**data)

    def line(self, floor: float) -> str:
        """How the strength was chosen, in one line."""
        if self.meets_floor:
            return f"{self.label}: strength {self.coef:g} (tuning: trait {self.trait:.0f}, coherence {self.coherence:.0f} >= {floor:g})"
        return f"{self.label}: strength {self.coef:g}, the most coherent tried: no strength kept coherence >= {floor:g} (best {self.coherence:.0f})"


def question_mean(records: Sequence[dict[str, Any]], key: str) -> float:
    """Mean of `key` over questions (each question's answers averaged first); nan when no record has a value."""
    means = group_means([r[key] for r in records], [r["question_id"] for r in records])
    return sum(means.values()) / len(means) if means else math.nan


def choose(entry: Entry, records: Sequence[dict[str, Any]], floor: float) -> Choice:
    """The strength of `entry` with the largest mean trait (a defence: the smallest) among those whose mean coherence
    is at least `floor`; when none is, the most coherent one, marked as below the floor."""
    tried = []
    for coef in sorted({r["coef"] for r in records}):
        rows = [r for r in records if r["coef"] == coef]
        tried.append({"coef": coef, "trait": question_mean(rows, "trait_score"), "coherence": question_mean(rows, "coherence")})
    if not tried:
        raise ValueError(f"no tuning records for method '{entry.label}'")
    sign = -1.0 if entry.goal == "lower" else 1.0
    eligible = [t for t in tried if t["coherence"] >= floor]
    if eligible:
        best = max(eligible, key=lambda t: (_finite(sign * t["trait"]), -abs(t["coef"])))
    else:
        best = max(tried, key=lambda t: (_finite(t["coherence"]), -abs(t["coef"])))
    return Choice(entry.label, best["coef"], best["trait"], best["coherence"], bool(eligible), tried)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf
