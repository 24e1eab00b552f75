"""What a run can conclude: one verdict per method and layer, drawn from its numbers.

Every evaluation (sweep, compare, demo, transfer evaluate, adapter evaluate)
ends with the same four-way verdict, so a table never has to be read alone:

- "clear rise": the trait at the best positive coefficient beats coefficient 0
  beyond both 95% CIs while coherence stays >= MIN_COHERENCE;
- "rise with coherence loss": it beats 0 beyond both CIs only where coherence fell;
- "no measurable effect": no positive coefficient beats 0 beyond both CIs;
- "judge cannot separate the trait": the judge could not tell the model's own
  positive from negative answers (expressibility.py), so no score means much.

Beside it, a sign test over held-out questions (each question's mean trait at
the best coefficient vs at 0) says whether the rise is broad or carried by a few.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

MIN_COHERENCE = 50.0
CLEAR, COHERENCE_LOSS, NO_EFFECT, JUDGE_BLIND = (
    "clear rise", "rise with coherence loss", "no measurable effect", "judge cannot separate the trait",
)


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

    def line(self) -> str:
        """One line: who, verdict, and the numbers behind it."""
        where = self.method if self.layer in (None, "", 0) else f"{self.method} @ layer {self.layer}"
        text = f"{where}: {self.verdict}"
        if self.trait is not None and self.base is not None:
            (m, lo, hi), (bm, blo, bhi) = self.trait, self.base
            text += f" (trait {m:.1f} [{lo:.1f}, {hi:.1f}] at {self.coef:+g} vs {bm:.1f} [{blo:.1f}, {bhi:.1f}] at 0"
            text += "" if self.coherence is None else f", coherence {self.coherence:.0f}"
            text += ")"
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


def verdict_for(method: str, layer: Any, cells: Sequence[Cell], expressed: bool | None = None) -> Verdict:
    """The verdict for one method at one layer from its cells (one per coefficient, 0 included)."""
    base = next((c for c in cells if c.coef == 0 and _finite(c.trait)), None)
    rising = [c for c in cells if c.coef > 0 and _finite(c.trait)]
    if base is None or not rising:
        return Verdict(method, layer, NO_EFFECT, note="needs coefficient 0 and a positive coefficient with scores to compare")
    beats = [c for c in rising if c.lo > base.hi]
    coherent = [c for c in beats if c.coherence is None or not _finite(c.coherence) or c.coherence >= MIN_COHERENCE]
    if expressed is False:
        verdict, pool = JUDGE_BLIND, rising
    elif coherent:
        verdict, pool = CLEAR, coherent
    elif beats:
        verdict, pool = COHERENCE_LOSS, beats
    else:
        verdict, pool = NO_EFFECT, rising
    best = max(pool, key=lambda c: c.trait)
    note = "" if expressed is not False else "the judge could not tell this model's positive from negative answers"
    return Verdict(
        method, layer, verdict, best.coef, (best.trait, best.lo, best.hi), (base.trait, base.lo, base.hi),
        None if best.coherence is None or not _finite(best.coherence) else best.coherence,
        sign_test(base.per_question, best.per_question), note,
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
