"""Can this model express this trait? A verdict from the contrastive answers, before any steering.

Steering a trait the model does not express under its own instructions cannot
work, and a judge that cannot tell its positive from its negative answers
cannot measure it either. So once the contrastive answers exist, a judge
scores them (out of fold for the offline judge; the judge as given for an
LLM judge) and the AUROC of positive vs negative scores decides, with its 95%
CI (Hanley & McNeil's standard error):

- strongly expressed: the CI's lower end is >= EXPRESSED_AUROC;
- weakly expressed:   the AUROC is >= EXPRESSED_AUROC but its CI reaches below
                      (a borderline trait, or too few answers to be sure);
- not expressed:      AUROC < EXPRESSED_AUROC; later results will not be meaningful.

AUROC is the criterion because it needs no score threshold and reads the same
for every judge; accuracy, the mean score gap and (for LLM judges) the pairs
passing Chen et al.'s filter are reported beside it. EXPRESSED_AUROC comes
from the built-in traits and a placebo control on SmolLM2
(experiments/expressibility.py, docs/experiments.md): the traits that steering
then moved scored 0.80-0.89, the others at most 0.59, so the line sits
between the two groups. The projection separation per layer is reported too,
but it does not decide: positive and negative answers are read under
different instructions, so their activations separate even when the answers
read alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

EXPRESSED_AUROC = 0.70
CHANCE = 0.5

Level = Literal["strongly expressed", "weakly expressed", "not expressed"]


@dataclass(frozen=True)
class Expressibility:
    """How clearly the model's positive and negative answers differ in the trait."""

    trait: str
    level: Level
    judge: str
    auroc: float
    auroc_lo: float  # lower end of its 95% CI
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
        numbers = [f"judge AUROC {self.auroc:.2f}, 95% CI from {self.auroc_lo:.2f}, threshold {EXPRESSED_AUROC:.2f}"]
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


def auroc_lower_bound(auroc: float, n_pos: int, n_neg: int) -> float:
    """The lower end of the AUROC's 95% CI, from Hanley & McNeil's (1982) standard error."""
    if n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    variance = (auroc * (1 - auroc) + (n_pos - 1) * (q1 - auroc**2) + (n_neg - 1) * (q2 - auroc**2)) / (n_pos * n_neg)
    return auroc - 1.96 * math.sqrt(max(variance, 0.0))


def level_of(auroc: float, auroc_lo: float) -> Level:
    """The verdict's level from the AUROC and the lower end of its CI."""
    if auroc < EXPRESSED_AUROC:
        return "not expressed"
    return "strongly expressed" if auroc_lo >= EXPRESSED_AUROC else "weakly expressed"


def from_embedding_judge(trait: str, judge: Any, n_pairs: int, projection: tuple[float, int] | None = None) -> Expressibility:
    """The verdict from an offline judge's out-of-fold accuracy, AUROC and gap (`EmbeddingJudge.fit` measures them)."""
    lo = auroc_lower_bound(judge.heldout_auroc, n_pairs, n_pairs)
    return Expressibility(
        trait, level_of(judge.heldout_auroc, lo), judge.name, judge.heldout_auroc, lo, judge.heldout_accuracy, judge.heldout_gap, n_pairs,
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
    lo = auroc_lower_bound(auroc, len(p), len(n))
    return Expressibility(
        trait, level_of(auroc, lo), judge, auroc, lo, None, gap, len(pos), passed,
        None if projection is None else projection[0], None if projection is None else projection[1],
    )
