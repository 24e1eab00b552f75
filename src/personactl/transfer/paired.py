"""Per-question comparisons for the transfer diagnostics: held-out choice of a condition, and a paired test.

Every condition (row) is scored on the same questions, so two conditions differ question by
question. `crossfit` picks the best coherent condition on one half of the questions and scores it
on the other half (both ways), so the pick never sees the questions it is judged on; `compare`
tests the per-question difference of two such score lists with a paired t-test (two-sided): its
95% CI of the mean difference and its p come from the same test, so a conclusion never says
"significant" beside an interval that holds 0, or the reverse. The tables' mean scores are means,
so the test is on the mean difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..intervals import mean_ci

MIN_COHERENCE = 50.0  # a condition below this is broken text, whatever its trait score
LEVEL = 0.05  # two-sided significance level of every paired test
N_FOLDS = 2

Scores = list[float | None]


@dataclass(frozen=True)
class Comparison:
    """a - b over the questions both have a score for: mean difference, its 95% CI and p (paired t-test)."""

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
    """Out-of-fold scores per question (each from the condition picked on the other fold) and the picks."""

    trait: Scores
    coherence: Scores
    collapsed: Scores
    picks: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, key: str = "trait") -> tuple[float, float, float]:
        """(mean, low, high) of `key` over the questions, bootstrap 95% CI."""
        return mean_ci(getattr(self, key))

    def said(self) -> str:
        t, lo, hi = self.mean()
        return f"{t:.1f} [{lo:.1f}, {hi:.1f}]"

    def chosen(self, key: str = "coef") -> str:
        """The picks in words, one per fold: 'coef 4 / 2, picked on questions 1,3,5 / 0,2,4'."""
        values = " / ".join(f"{p[key]:.4g}" for p in self.picks)
        return f"{key} {values}, picked on questions {picked_on(self.picks)}"


def picked_on(picks: Sequence[dict[str, Any]]) -> str:
    """The question indices each pick was made on: '1,3,5 / 0,2,4'."""
    return " / ".join(",".join(str(i) for i in p["selected_on"]) for p in picks)


def compare(a: Scores, b: Scores) -> Comparison:
    """Paired comparison of two per-question score lists (None = not scored, left out with its pair)."""
    from scipy.stats import ttest_1samp  # noqa: PLC0415

    diffs = np.asarray([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None], dtype=float)
    if diffs.size < 2 or np.all(diffs == diffs[0]):  # no spread: the difference is what it is, or unknown
        d = float(diffs[0]) if diffs.size else float("nan")
        return Comparison(int(diffs.size), d, d, d, float("nan") if diffs.size < 2 else float(d == 0))
    test = ttest_1samp(diffs, 0.0)
    ci = test.confidence_interval(1 - LEVEL)
    return Comparison(int(diffs.size), float(diffs.mean()), float(ci.low), float(ci.high), float(test.pvalue))


def folds(n: int) -> list[list[int]]:
    """Question indices split by parity; a single question is its own (in-sample) fold."""
    return [list(range(k, n, N_FOLDS)) for k in range(min(N_FOLDS, n))]


def _mean(values: Scores, idx: Sequence[int]) -> float:
    kept = [values[i] for i in idx if values[i] is not None]
    return float(np.mean(kept)) if kept else float("nan")


def pick(rows: Sequence[dict[str, Any]], idx: Sequence[int]) -> dict[str, Any] | None:
    """The row with the highest mean trait on questions `idx` among those coherent on them (None if none is)."""
    ok = [r for r in rows if _mean(r["coherence_scores"], idx) >= MIN_COHERENCE]
    return max(ok, key=lambda r: _mean(r["trait_scores"], idx)) if ok else None


def _record(row: dict[str, Any], selected: list[int], scored: list[int]) -> dict[str, Any]:
    return {"selected_on": selected, "scored_on": scored, **{k: row[k] for k in ("method", "layer", "coef", "applied_norm")}}


def _assemble(n: int, chosen: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> Choice:
    """A Choice from (row, pick) pairs: the questions each pick is scored on take that row's scores."""
    columns: dict[str, Scores] = {k: [None] * n for k in ("trait_scores", "coherence_scores", "collapsed")}
    for row, p in chosen:
        for i in p["scored_on"]:
            for key, column in columns.items():
                column[i] = row[key][i]
    return Choice(columns["trait_scores"], columns["coherence_scores"], columns["collapsed"], [p for _, p in chosen])


def crossfit(rows: Sequence[dict[str, Any]], fallback: dict[str, Any] | None = None) -> Choice | None:
    """Each question scored under the condition picked on the other fold; `fallback` where no row is coherent there."""
    n = len(rows[0]["trait_scores"])
    parts = folds(n)
    chosen = []
    for k, scored in enumerate(parts):
        selected = parts[(k + 1) % len(parts)]
        row = pick(rows, selected) or fallback
        if row is None:
            return None
        chosen.append((row, _record(row, selected, scored)))
    return _assemble(n, chosen)


def matched(rows: Sequence[dict[str, Any]], choice: Choice, key: str = "coef") -> Choice | None:
    """`choice`'s picks replayed on `rows`: per fold the row with the same `key` (e.g. the same norm), coherent or not."""
    by_key = {r[key]: r for r in rows}
    if any(p[key] not in by_key for p in choice.picks):
        return None
    chosen = [(by_key[p[key]], _record(by_key[p[key]], p["selected_on"], p["scored_on"])) for p in choice.picks]
    return _assemble(len(choice.trait), chosen)


def fixed(row: dict[str, Any]) -> Choice:
    """One condition's own scores, as a Choice with no pick (e.g. the unsteered baseline)."""
    return Choice(row["trait_scores"], row["coherence_scores"], row["collapsed"])
