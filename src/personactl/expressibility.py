"""Can this model express this trait? A verdict from the contrastive answers, before any steering.

Steering a trait the model does not express under its own instructions cannot
work, and a judge that cannot tell its positive from its negative answers
cannot measure it either. So once the contrastive answers exist, a judge
scores them (out of fold for the offline judge; the judge as given for an
LLM judge) and the AUROC of positive vs negative scores decides:

- strongly expressed: AUROC >= STRONG_AUROC
- weakly expressed:   AUROC >= WEAK_AUROC
- not expressed:      below; later results will not be meaningful.

AUROC is the criterion because it needs no score threshold and reads the same
for every judge; accuracy, the mean score gap and (for LLM judges) the pairs
passing Chen et al.'s filter are reported beside it. The thresholds come from
the built-in traits on SmolLM2 (experiments/expressibility.py, docs/experiments.md).
The projection separation per layer is reported too, but it does not decide:
positive and negative answers are read under different instructions, so their
activations separate even when the answers read alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

STRONG_AUROC = 0.90
WEAK_AUROC = 0.75
CHANCE = 0.5

Level = Literal["strongly expressed", "weakly expressed", "not expressed"]


@dataclass(frozen=True)
class Expressibility:
    """How clearly the model's positive and negative answers differ in the trait."""

    trait: str
    level: Level
    judge: str
    auroc: float
    accuracy: float | None
    gap: float
    n_pairs: int
    passed: int | None = None  # pairs passing the filter (LLM judges only)
    projection_auroc: float | None = None
    projection_layer: int | None = None

    @property
    def expressed(self) -> bool:
        return self.level != "not expressed"

    def line(self) -> str:
        """The one-line verdict a command prints."""
        numbers = [f"judge AUROC {self.auroc:.2f}"]
        if self.accuracy is not None:
            numbers.append(f"accuracy {self.accuracy:.2f}, chance {CHANCE:.2f}")
        numbers.append(f"gap {self.gap:.0f}")
        if self.passed is not None:
            numbers.append(f"{self.passed}/{self.n_pairs} pairs pass the filter")
        text = f"{self.trait}: {self.level}" + (" by this model" if self.level == "not expressed" else "")
        text += f" ({'; '.join(numbers)}; {self.judge})"
        if self.level == "not expressed":
            text += ": steering results will not be meaningful; try a larger model, stronger instructions or an LLM judge"
        elif self.level == "weakly expressed":
            text += ": effects will be small and noisy; read the confidence intervals"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Expressibility":
        return cls(**{k: v for k, v in data.items() if k != "line"})


def level_of(auroc: float) -> Level:
    if auroc >= STRONG_AUROC:
        return "strongly expressed"
    if auroc >= WEAK_AUROC:
        return "weakly expressed"
    return "not expressed"


def from_embedding_judge(trait: str, judge: Any, n_pairs: int, projection: tuple[float, int] | None = None) -> Expressibility:
    """The verdict from an offline judge's out-of-fold accuracy, AUROC and gap (`EmbeddingJudge.fit` measures them)."""
    return Expressibility(
        trait, level_of(judge.heldout_auroc), judge.name, judge.heldout_auroc, judge.heldout_accuracy, judge.heldout_gap, n_pairs,
        projection_auroc=None if projection is None else projection[0], projection_layer=None if projection is None else projection[1],
    )


def from_scores(
    trait: str, judge: str, pos: Sequence[float | None], neg: Sequence[float | None], passed: int | None = None,
    projection: tuple[float, int] | None = None,
) -> Expressibility:
    """The verdict from a judge's 0-100 scores of the positive and negative answers (unscored answers left out)."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    p = np.array([s for s in pos if s is not None], dtype=float)
    n = np.array([s for s in neg if s is not None], dtype=float)
    if len(p) == 0 or len(n) == 0:
        auroc, gap = CHANCE, 0.0
    else:
        auroc = float(roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n]))
        gap = float(p.mean() - n.mean())
    return Expressibility(
        trait, level_of(auroc), judge, auroc, None, gap, len(pos), passed,
        None if projection is None else projection[0], None if projection is None else projection[1],
    )
