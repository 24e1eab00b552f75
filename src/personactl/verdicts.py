"""What a run can conclude: one verdict per method and layer, drawn from its numbers.

Every evaluation (sweep, compare, demo, transfer evaluate, adapter evaluate)
ends with the same verdict, so a table never has to be read alone:

- "clear rise": the trait at a positive coefficient beats coefficient 0 while
  coherence stays >= MIN_COHERENCE;
- "rise with coherence loss": it beats 0 only where coherence fell;
- "no measurable effect": no positive coefficient beats 0;
- "judge cannot separate the trait": the judge could not tell the model's own
  positive from negative answers (expressibility.py) and steering did not move
  its score either, so no score means much;
- "evidence disagrees": steering moved the judge's score although the judge
  could not tell the model's own positive from negative answers. The line says
  what the data support: a rise in what the judge scores, not that it is the trait.

"Beats" is paired by question: the per-question difference (steered minus 0,
each question's samples averaged first) has a 95% CI above 0, Bonferroni-
adjusted for the number of positive coefficients tried, so a sweep of several
coefficients does not find a rise by chance more often than 1 in 40. Without
per-question means (a summary alone), the two conditions' CIs must not overlap.
Beside it, a sign test over the questions at the best coefficient says whether
the rise is broad or carried by a few.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .intervals import paired_difference_ci

MIN_COHERENCE = 50.0
CONFIDENCE = 0.95
CLEAR, COHERENCE_LOSS, NO_EFFECT, JUDGE_BLIND, DISAGREES = (
    "clear rise",
    "rise with coherence loss",
    "no measurable effect",
    "judge cannot separate the trait",
    "evidence disagrees",
)
BLIND_NOTE = "the judge could not tell this model's positive from negative answers"


@dataclass(frozen=True)
class Cell:
    """One condition's trait (mean and 95% CI), coherence, and mean trait per question."""

    coef: float
    trait: float
    lo: float
    hi: float
    coherence: float | None = None
    per_question: dict[Any, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SignTest:
    """Questions whose mean trait rose / fell / tied from coefficient 0 to the best one; two-sided binomial p."""

    up: int
    down: int
    ties: int
    p_value: float

    def describe(self) -> str:
        n = self.up + self.down + self.ties
        return f"{self.up}/{n} questions rose, {self.down} fell, {self.ties} tied (sign test p = {self.p_value:.2g})"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one method at one layer, with the numbers it rests on."""

    method: str
    layer: Any
    verdict: str
    coef: float | None = None
    trait: tuple[float, float, float] | None = None  # at `coef`: mean, lo, hi
    base: tuple[float, float, float] | None = None  # at 0
    coherence: float | None = None  # at `coef`
    sign: SignTest | None = None
    note: str = ""
    rise: tuple[float, float, float] | None = None  # at `coef`: mean per-question difference from 0, its adjusted CI

    def line(self) -> str:
        """One line: who, verdict, and the numbers behind it."""
        where = self.method if self.layer in (None, "", 0) else f"{self.method} @ layer {self.layer}"
        text = f"{where}: {self.verdict}"
        if self.trait is not None and self.base is not None:
            (m, lo, hi), (bm, blo, bhi) = self.trait, self.base
            text += f" (trait {m:.1f} [{lo:.1f}, {hi:.1f}] at {self.coef:+g} vs {bm:.1f} [{blo:.1f}, {bhi:.1f}] at 0"
            text += "" if self.coherence is None else f", coherence {self.coherence:.0f}"
            text += ")"
        if self.rise is not None:
            m, lo, hi = self.rise
            text += f"; rise {m:+.1f} [{lo:+.1f}, {hi:+.1f}] paired by question"
        if self.sign is not None:
            text += f"; {self.sign.describe()}"
        return text + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line()}


def sign_test(base: dict[Any, float], steered: dict[Any, float]) -> SignTest | None:
    """Sign test over the questions scored in both conditions (None when none are)."""
    from scipy.stats import binomtest  # noqa: PLC0415

    shared = [q for q in steered if q in base and _finite(steered[q]) and _finite(base[q])]
    if not shared:
        return None
    up = sum(steered[q] > base[q] for q in shared)
    down = sum(steered[q] < base[q] for q in shared)
    p = binomtest(up, up + down, 0.5).pvalue if up + down else 1.0
    return SignTest(up, down, len(shared) - up - down, float(p))


def paired_rise(base: Cell, steered: Cell, confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """Mean and CI of the per-question difference steered - base (None with fewer than 2 shared questions)."""
    shared = [q for q in steered.per_question if q in base.per_question]
    if len(shared) < 2:
        return None
    return paired_difference_ci(steered.per_question, base.per_question, confidence=confidence)


def verdict_for(method: str, layer: Any, cells: Sequence[Cell], expressed: bool | None = None) -> Verdict:
    """The verdict for one method at one layer from its cells (one per coefficient, 0 included)."""
    base = next((c for c in cells if c.coef == 0 and _finite(c.trait)), None)
    rising = [c for c in cells if c.coef > 0 and _finite(c.trait)]
    if base is None or not rising:
        return Verdict(method, layer, NO_EFFECT, note="needs coefficient 0 and a positive coefficient with scores to compare")
    adjusted = 1 - (1 - CONFIDENCE) / len(rising)
    rises = {c.coef: paired_rise(base, c, adjusted) for c in rising}

    def beats(c: Cell) -> bool:
        rise = rises[c.coef]
        return c.lo > base.hi if rise is None else rise[1] > 0

    beating = [c for c in rising if beats(c)]
    coherent = [c for c in beating if c.coherence is None or not _finite(c.coherence) or c.coherence >= MIN_COHERENCE]
    if coherent:
        steered, pool = CLEAR, coherent
    elif beating:
        steered, pool = COHERENCE_LOSS, beating
    else:
        steered, pool = NO_EFFECT, rising
    best = max(pool, key=lambda c: c.trait)
    verdict, note = steered, ""
    if expressed is False and steered == NO_EFFECT:
        verdict, note = JUDGE_BLIND, BLIND_NOTE
    elif expressed is False:
        verdict, note = (
            DISAGREES,
            (
                f"steering gave a {steered} by the judge's own scores, but {BLIND_NOTE}: the data support a rise in what "
                "the judge scores, not that it is the trait; check with an LLM judge (--judge openai:MODEL)"
            ),
        )
    return Verdict(
        method,
        layer,
        verdict,
        best.coef,
        (best.trait, best.lo, best.hi),
        (base.trait, base.lo, base.hi),
        None if best.coherence is None or not _finite(best.coherence) else best.coherence,
        sign_test(base.per_question, best.per_question),
        note,
        rises[best.coef],
    )


def sweep_verdicts(summary: Sequence[dict[str, Any]], records: Iterable[dict[str, Any]] = (), expressed: bool | None = None) -> list[Verdict]:
    """One verdict per (method, layer) of a sweep's summary rows; `records` give the per-question means."""
    per_question: dict[tuple[Any, Any, float], dict[Any, list[float]]] = {}
    for r in records:
        if r.get("trait") is not None:
            per_question.setdefault((r["method"], r["layer"], float(r["coef"])), {}).setdefault(r["question_id"], []).append(r["trait"])
    groups: dict[tuple[Any, Any], list[Cell]] = {}
    for row in summary:
        key = (row["method"], row["layer"], float(row["coef"]))
        means = {q: sum(v) / len(v) for q, v in per_question.get(key, {}).items()}
        groups.setdefault(key[:2], []).append(
            Cell(key[2], _num(row["trait_mean"]), _num(row["trait_lo"]), _num(row["trait_hi"]), _opt(row.get("coherence_mean")), means)
        )
    return [verdict_for(method, layer, cells, expressed) for (method, layer), cells in groups.items()]


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
