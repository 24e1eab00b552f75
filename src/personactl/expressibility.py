"""Can this model express this trait? A verdict from the contrastive answers, before any steering.

Steering a trait the model does not express under its own instructions cannot
work, and a judge that cannot tell its positive from its negative answers
cannot measure it either. So once the contrastive answers exist, a judge
scores them (out of fold by question for the offline judge: every answer of a
held-out question is held out together; the judge as given for an LLM judge)
and the AUROC of positive vs negative scores decides, with a 95% CI clustered
by question (intervals.auroc_ci), since the answers to one question are not
independent:

- too few answers to say: fewer than MIN_QUESTIONS questions or MIN_PAIRS
                      scored pairs, or an AUROC above the line whose CI still
                      reaches chance;
- strongly expressed: the CI's lower end is >= EXPRESSED_AUROC;
- weakly expressed:   the AUROC is >= EXPRESSED_AUROC but its CI reaches below;
- not expressed:      AUROC < EXPRESSED_AUROC; later results will not be meaningful.

AUROC is the criterion because it needs no score threshold and reads the same
for every judge; accuracy, the mean score gap and (for LLM judges) the pairs
passing Chen et al.'s filter are reported beside it. EXPRESSED_AUROC comes
from the built-in traits and placebo controls on SmolLM2
(experiments/expressibility.py, docs/experiments.md): placebo traits (two
instructions asking for the same thing, and a real trait's answers with
shuffled labels) land near 0.5 with CIs that cover it, and the line sits above
every placebo's upper CI end. The projection separation per layer is reported
too, but it does not decide: positive and negative answers are read under
different instructions, so their activations separate even when the answers
read alike.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

EXPRESSED_AUROC = 0.70
CHANCE = 0.5
MIN_QUESTIONS = 5  # independent units below which no AUROC interval means much
MIN_PAIRS = 10

Level = Literal["strongly expressed", "weakly expressed", "not expressed", "too few answers to say"]


@dataclass(frozen=True)
class Expressibility:
    """How clearly the model's positive and negative answers differ in the trait."""

    trait: str
    level: Level
    judge: str
    auroc: float
    auroc_lo: float  # 95% CI clustered by question
    accuracy: float | None
    gap: float
    n_pairs: int
    passed: int | None = None  # pairs passing the filter (LLM judges only)
    projection_auroc: float | None = None
    projection_layer: int | None = None
    auroc_hi: float | None = None
    n_questions: int | None = None

    @property
    def expressed(self) -> bool | None:
        """True or False when the answers say; None when there are too few to say."""
        return None if self.level == "too few answers to say" else self.level != "not expressed"

    def line(self) -> str:
        """The one-line verdict a command prints."""
        ci = f"[{self.auroc_lo:.2f}, {self.auroc_hi:.2f}]" if self.auroc_hi is not None else f"from {self.auroc_lo:.2f}"
        over = "" if self.n_questions is None else f" over {self.n_questions} questions"
        numbers = [f"judge AUROC {self.auroc:.2f}, 95% CI {ci}{over}, threshold {EXPRESSED_AUROC:.2f}"]
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
        elif self.level == "too few answers to say":
            text += (
                f": the CI cannot tell this trait from chance; use at least {MIN_QUESTIONS} questions and "
                f"{MIN_PAIRS} answer pairs (more questions narrow it most)"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Expressibility:
        return cls(**{k: v for k, v in data.items() if k != "line"})


def level_of(auroc: float, auroc_lo: float, n_questions: int | None = None, n_pairs: int | None = None) -> Level:
    """The verdict's level from the AUROC, its CI and how many questions and pairs it rests on."""
    few = (n_questions is not None and n_questions < MIN_QUESTIONS) or (n_pairs is not None and n_pairs < MIN_PAIRS)
    if few or not math.isfinite(auroc):
        return "too few answers to say"
    if auroc < EXPRESSED_AUROC:
        return "not expressed"
    if not math.isfinite(auroc_lo) or auroc_lo <= CHANCE:
        return "too few answers to say"
    return "strongly expressed" if auroc_lo >= EXPRESSED_AUROC else "weakly expressed"


def from_embedding_judge(trait: str, judge: Any, n_pairs: int, projection: tuple[float, int] | None = None) -> Expressibility:
    """The verdict from an offline judge's out-of-fold accuracy, AUROC (CI by question) and gap, as
    `EmbeddingJudge.fit` measured them."""
    lo, hi = judge.heldout_auroc_ci or (math.nan, math.nan)
    auroc, questions = judge.heldout_auroc, judge.heldout_questions
    return Expressibility(
        trait,
        level_of(auroc, lo, questions, n_pairs),
        judge.name,
        auroc,
        lo,
        judge.heldout_accuracy,
        judge.heldout_gap,
        n_pairs,
        None,
        *_projection(projection),
        hi,
        questions,
    )


def from_scores(
    trait: str,
    judge: str,
    pos: Sequence[float | None],
    neg: Sequence[float | None],
    passed: int | None = None,
    projection: tuple[float, int] | None = None,
    *,
    groups: Sequence[Hashable] | None = None,
) -> Expressibility:
    """The verdict from a judge's 0-100 scores of the positive and negative answers (unscored answers left out).

    `groups` names each pair's question (pos[i] and neg[i] answer the same one); without it each pair is its own.
    """
    from .intervals import auroc_ci  # noqa: PLC0415

    labels: Sequence[Hashable] = range(len(pos)) if groups is None else groups
    p = [(s, g) for s, g in zip(pos, labels) if s is not None]
    n = [(s, g) for s, g in zip(neg, labels) if s is not None]
    if not p or not n:
        auroc, lo, hi, gap = math.nan, math.nan, math.nan, 0.0
    else:
        auroc, lo, hi = auroc_ci([s for s, _ in p], [s for s, _ in n], [g for _, g in p], [g for _, g in n])
        gap = float(np.mean([s for s, _ in p]) - np.mean([s for s, _ in n]))
    questions = len({g for _, g in p + n})
    scored_pairs = min(len(p), len(n))
    return Expressibility(
        trait,
        level_of(auroc, lo, questions, scored_pairs),
        judge,
        auroc,
        lo,
        None,
        gap,
        len(pos),
        passed,
        *_projection(projection),
        hi,
        questions,
    )


def _projection(projection: tuple[float, int] | None) -> tuple[float | None, int | None]:
    return (None, None) if projection is None else projection
