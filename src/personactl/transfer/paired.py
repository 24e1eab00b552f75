"""Per-question comparisons for the transfer diagnostics: held-out choice of a condition, and a paired test.

Every condition (row) scores the same answers, and `questions` names the question of each score
(several answers of one question share it; without it, each score is its own question). The unit is
the question: its answers are averaged first, so a question asked twice counts once.

`crossfit` picks the best coherent condition on one half of the questions and scores it on the other
half (both ways), so the pick never sees any answer of the questions it is judged on. The two halves
are still not independent: each half's scores also chose the other half's condition, so when
conditions are close the halves rise and fall together and a t interval over questions is too
narrow (simulated, three tied alphas: 93% coverage, 88% for a difference of two such choices).
Every interval here is therefore Student's t with a delete-one-question jackknife standard error,
each question left out in turn and the picks re-made without it; for a choice without picks this
is exactly the ordinary t (a paired t-test for a difference). Its 95% CI and p come from the same
test, so a conclusion never says "significant" beside an interval that holds 0, or the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from ..evaluate import SCORE_RANGE
from ..intervals import CONFIDENCE, group_means

MIN_COHERENCE = 50.0  # a condition below this is broken text, whatever its trait score
LEVEL = 0.05  # two-sided significance level of every paired test
N_FOLDS = 2
KEYS = ("trait_scores", "coherence_scores", "collapsed")

Scores = list[float | None]
PerQuestion = dict[Hashable, float]


@dataclass(frozen=True)
class Comparison:
    """a - b over the questions both have a score for: mean difference, its 95% CI and p (jackknife t)."""

    n: int
    diff: float
    lo: float
    hi: float
    p: float

    @property
    def higher(self) -> bool:
        return self.p < LEVEL and self.diff > 0

    @property
    def lower(self) -> bool:
        return self.p < LEVEL and self.diff < 0

    def said(self) -> str:
        return f"difference {self.diff:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}], paired t p = {self.p:.2g}, n = {self.n}"

    def record(self) -> dict[str, float]:
        return {"diff": self.diff, "diff_lo": self.lo, "diff_hi": self.hi, "p": self.p, "n": self.n}


@dataclass(frozen=True)
class Choice:
    """Out-of-fold scores per answer (each from the condition picked on the other fold), their questions and the picks.

    `remake(q)` is the same choice made without question q (None where it cannot be); a fixed choice has none.
    """

    trait: Scores
    coherence: Scores
    collapsed: Scores
    questions: list[Hashable]
    picks: list[dict[str, Any]] = field(default_factory=list)
    remake: Callable[[Hashable], Choice | None] | None = field(default=None, repr=False, compare=False)

    def without(self, question: Hashable) -> Choice | None:
        """This choice with its picks re-made without `question` (a fixed choice is unchanged)."""
        return self.remake(question) if self.remake is not None else self

    def per_question(self, key: str = "trait") -> PerQuestion:
        """{question: mean of `key` over its answers}."""
        return group_means(getattr(self, key), self.questions)

    def mean(self, key: str = "trait") -> tuple[float, float, float]:
        """(mean, low, high) of `key` (a 0-100 score) over the questions, t 95% CI with the jackknife standard error,
        kept within 0-100."""
        values = self.per_question(key)
        estimate, se = _jackknife(values, lambda q: _left_out(self.without(q), key, q))
        lo, hi, _ = _t(estimate, se, len(values), CONFIDENCE)
        return estimate, max(lo, SCORE_RANGE[0]), min(hi, SCORE_RANGE[1])

    def rate(self, key: str = "collapsed") -> tuple[float, float, float]:
        """(rate, low, high) of a 0/1 `key` over the questions: Wilson's 95% score interval at the effective number of
        answers (Korn and Graubard 1998): rate (1 - rate) / jackknife variance, at most the answers scored, times
        (z / t)^2 for the questions' degrees of freedom.

        A t interval is too short on the low side of a small rate: at a true 30% it says "below 30%" in 4-9% of
        simulated runs (8-20 questions) instead of 2.5%, and 0 collapses in 8 answers gives [0, 0]. This gives 0-4%.
        """
        from scipy.stats import norm, t  # noqa: PLC0415

        values = self.per_question(key)
        rate, se = _jackknife(values, lambda q: _left_out(self.without(q), key, q))
        answers = sum(v is not None for v in getattr(self, key))
        if math.isnan(se):
            return rate, math.nan, math.nan
        z = float(norm.ppf((1 + CONFIDENCE) / 2))
        n = (answers if se == 0 else min(answers, rate * (1 - rate) / se**2)) * (z / t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) ** 2
        centre, half = rate + z**2 / (2 * n), z * math.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2))
        return rate, (centre - half) / (1 + z**2 / n), (centre + half) / (1 + z**2 / n)

    def said(self) -> str:
        t, lo, hi = self.mean()
        return f"{t:.1f} [{lo:.1f}, {hi:.1f}]"

    def chosen(self, key: str = "coef") -> str:
        """The picks in words, one per fold: 'coef 4 / 2, picked on questions 1,3,5 / 0,2,4'."""
        values = " / ".join(f"{p[key]:.4g}" for p in self.picks)
        return f"{key} {values}, picked on questions {picked_on(self.picks)}"


def picked_on(picks: Sequence[dict[str, Any]]) -> str:
    """The questions each pick was made on: '1,3,5 / 0,2,4'."""
    return " / ".join(",".join(str(i) for i in p["selected_on"]) for p in picks)


def questions_of(row: dict[str, Any]) -> list[Hashable]:
    """The question of each of the row's scores; a row without them has one score per question."""
    return list(row.get("questions") or range(len(row["trait_scores"])))


def _left_out(choice: Choice | None, key: str, question: Hashable) -> PerQuestion | None:
    """`choice`'s per-question means of `key` without `question` (None when the choice could not be made)."""
    if choice is None:
        return None
    return {q: v for q, v in choice.per_question(key).items() if q != question}


def _jackknife(values: PerQuestion, replicate: Callable[[Hashable], PerQuestion | None]) -> tuple[float, float]:
    """(mean, standard error) of the mean of `values` over questions; the error is the delete-one jackknife's, with
    `replicate(q)` the values when question q is left out (nan with fewer than two questions or where one cannot be made)."""
    n = len(values)
    estimate = sum(values.values()) / n if values else math.nan
    replicates = [replicate(q) for q in values] if n >= 2 else [None]
    made = [r for r in replicates if r]
    if len(made) < len(replicates):
        return estimate, math.nan
    means = np.array([sum(r.values()) / len(r) for r in made])
    se = math.sqrt((n - 1) / n * float(((means - means.mean()) ** 2).sum()))
    return estimate, 0.0 if se <= 1e-12 * max(1.0, abs(estimate)) else se


def _t(estimate: float, se: float, n: int, confidence: float) -> tuple[float, float, float]:
    """(low, high, p against 0) from Student's t on n - 1 degrees of freedom; no spread gives the estimate as both
    bounds (p 1 at 0, else 0)."""
    from scipy.stats import t  # noqa: PLC0415

    if math.isnan(se):
        return math.nan, math.nan, math.nan
    if se == 0:
        return estimate, estimate, float(estimate == 0)
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * se
    return estimate - half, estimate + half, float(2 * t.sf(abs(estimate) / se, n - 1))


def _differences(a: Choice | None, b: Choice | None, key: str, leave_out: Hashable | None = None) -> PerQuestion | None:
    """{question: a - b} of the per-question means over the questions both have, but `leave_out`."""
    if a is None or b is None:
        return None
    x, y = a.per_question(key), b.per_question(key)
    return {q: x[q] - y[q] for q in x if q in y and q != leave_out}


def compare(a: Choice, b: Choice, key: str = "trait") -> Comparison:
    """Paired test of a - b on the per-question means of `key`, over the questions both have a score for."""
    diffs = _differences(a, b, key) or {}
    estimate, se = _jackknife(diffs, lambda q: _differences(a.without(q), b.without(q), key, q))
    return Comparison(len(diffs), estimate, *_t(estimate, se, len(diffs), 1 - LEVEL))


def folds(questions: Sequence[Hashable]) -> list[list[Hashable]]:
    """The distinct questions split by parity of their first appearance; a single question is its own (in-sample) fold."""
    distinct = list(dict.fromkeys(questions))
    return [distinct[k::N_FOLDS] for k in range(min(N_FOLDS, len(distinct)))]


def _pick(rows: Sequence[dict[str, Any]], means: Sequence[dict[str, PerQuestion]], on: Sequence[Hashable]) -> dict[str, Any] | None:
    """The row with the highest mean trait on questions `on` among those coherent on them (None if none is)."""

    def mean(i: int, key: str) -> float:
        kept = [means[i][key][q] for q in on if q in means[i][key]]
        return sum(kept) / len(kept) if kept else math.nan

    ok = [i for i in range(len(rows)) if mean(i, "coherence_scores") >= MIN_COHERENCE]
    return rows[max(ok, key=lambda i: mean(i, "trait_scores"))] if ok else None


def _record(row: dict[str, Any], selected: list[Hashable], scored: list[Hashable]) -> dict[str, Any]:
    return {"selected_on": selected, "scored_on": scored, **{k: row[k] for k in ("method", "layer", "coef", "applied_norm")}}


def _assemble(
    questions: list[Hashable], chosen: Sequence[tuple[dict[str, Any], dict[str, Any]]], remake: Callable[[Hashable], Choice | None] | None = None
) -> Choice:
    """A Choice from (row, pick) pairs: the answers of the questions each pick is scored on take that row's scores."""
    columns: dict[str, Scores] = {k: [None] * len(questions) for k in KEYS}
    for row, p in chosen:
        scored = set(p["scored_on"])
        at = [i for i, q in enumerate(questions) if q in scored]
        for key, column in columns.items():
            values = row[key]
            for i in at:
                column[i] = values[i]
    trait, coherence, collapsed = (columns[k] for k in KEYS)
    return Choice(trait, coherence, collapsed, questions, [p for _, p in chosen], remake)


@overload
def crossfit(rows: Sequence[dict[str, Any]], fallback: dict[str, Any]) -> Choice: ...
@overload
def crossfit(rows: Sequence[dict[str, Any]], fallback: None = None) -> Choice | None: ...
def crossfit(rows: Sequence[dict[str, Any]], fallback: dict[str, Any] | None = None) -> Choice | None:
    """Each question scored under the condition picked on the other fold; `fallback` where no row is coherent there.

    Made again without a question (for the jackknife), a fold where no row is coherent keeps its first pick. None
    when a fold has no coherent row and no `fallback`: with a fallback there is always a Choice.
    """
    questions = questions_of(rows[0])
    means = [{k: group_means(r[k], questions) for k in KEYS[:2]} for r in rows]

    def fit(parts: list[list[Hashable]], keep: Sequence[dict[str, Any] | None]) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
        chosen = []
        for k, scored in enumerate(parts):
            selected = parts[(k + 1) % len(parts)]
            row = _pick(rows, means, selected) or keep[k]
            if row is None:
                return None
            chosen.append((row, _record(row, selected, scored)))
        return chosen

    parts = folds(questions)
    first = fit(parts, [fallback] * len(parts))
    if first is None:
        return None

    def remake(question: Hashable) -> Choice:
        kept = [[q for q in part if q != question] for part in parts]
        return _assemble(questions, fit(kept, [row for row, _ in first]) or [])

    return _assemble(questions, first, remake)


def matched(rows: Sequence[dict[str, Any]], choice: Choice, key: str = "coef") -> Choice | None:
    """`choice`'s picks replayed on `rows`: per fold the row with the same `key` (e.g. the same norm), coherent or not."""
    by_key = {r[key]: r for r in rows}
    if any(p[key] not in by_key for p in choice.picks):
        return None
    chosen = [(by_key[p[key]], _record(by_key[p[key]], p["selected_on"], p["scored_on"])) for p in choice.picks]

    def remake(question: Hashable) -> Choice | None:
        again = choice.without(question)
        return matched(rows, again, key) if again is not None else None

    return _assemble(choice.questions, chosen, remake if choice.remake is not None else None)


def fixed(row: dict[str, Any]) -> Choice:
    """One condition's own scores, as a Choice with no pick (e.g. the unsteered baseline)."""
    trait, coherence, collapsed = (row[k] for k in KEYS)
    return Choice(trait, coherence, collapsed, questions_of(row))
