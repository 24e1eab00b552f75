"""The bench's leaderboard: each method's scores per trait and across traits, pairwise tests, and what they support.

Every method is scored once on the same held-out questions with the same seeds, and every answer has three judge
scores (trait, coherence, relevance) and their harmonic mean, the combined score (as AxBench combines concept,
instruction and fluency). The unit is the question, never the answer: a question's answers are averaged first,
and every interval is Student's t over those per-question means (`intervals`), so several samples of one question
cannot pass for independent evidence.

Pairs of methods are compared by question (the questions both answered): the mean difference, its 95% interval
and a paired t p-value from the same t, then Holm's adjustment over all the pairs of one trait (the family), so
that a bench of k methods says "supported" for some pair of identical methods no more often than 1 in 20. The
interval is the pair's own, unadjusted: it can exclude 0 while Holm's p does not support the difference.
Simulated (tests/test_bench_leaderboard.py, 400 benches of 10-20 questions, 1-4 samples each): with four identical
methods some pair was supported in 3.3% of benches and each interval covered 0 in 95.0%; a known difference was
covered in 97.0%; taking answers as independent would have rejected a true null in 30% of tests instead of 5%.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from ..errors import BenchError
from ..intervals import CONFIDENCE, group_means, mean_ci, paired_difference_ci

SCORE_RANGE = (0.0, 100.0)  # judges score 0-100
LEVEL = 0.05  # family-wise level of `Comparison.supported`
MIN_QUESTIONS = 3  # questions both methods answered below which a pair is not compared
METRICS = ("trait_score", "coherence", "relevance", "combined")
SCORE_KEYS = METRICS[:3]
RECORD_KEYS = ("trait", "method", "question_id", "sample", *SCORE_KEYS)

Estimate = tuple[float, float, float]  # mean, low, high


@dataclass(frozen=True)
class MethodRow:
    """One method on one trait: questions and answers scored, and each metric's mean over questions with its 95% CI.

    `per_question` holds the combined score of each question (its answers averaged), for the overall leaderboard.
    """

    trait: str
    method: str
    questions: int
    answers: int
    trait_score: Estimate
    coherence: Estimate
    relevance: Estimate
    combined: Estimate
    per_question: dict[Hashable, float] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class OverallRow:
    """One method across traits: the mean of its per-trait combined means, with a 95% CI stratified by trait."""

    method: str
    traits: tuple[str, ...]
    combined: Estimate


@dataclass(frozen=True)
class Comparison:
    """`a` - `b` on one trait's `metric`, paired by question: mean difference, 95% CI, paired t p and Holm's p."""

    trait: str
    metric: str
    a: str
    b: str
    questions: int
    diff: float
    lo: float
    hi: float
    p: float
    p_holm: float

    @property
    def supported(self) -> bool:
        """Whether the data support a difference, family-wise (Holm's p over the trait's pairs below LEVEL)."""
        return self.p_holm < LEVEL


def combined_score(trait: float | None, coherence: float | None, relevance: float | None) -> float | None:
    """The harmonic mean of the three scores: 0 if any is 0 (one failed dimension fails the answer), None if any is None."""
    scores = (trait, coherence, relevance)
    if any(s is None for s in scores):
        return None
    if any(s == 0 for s in scores):
        return 0.0
    return 3 / sum(1 / float(s) for s in scores if s is not None)


def method_rows(records: Iterable[Mapping[str, Any]]) -> list[MethodRow]:
    """One row per (trait, method); traits in alphabetical order, methods by combined mean, highest first."""
    rows = []
    for (trait, method), recs in _by_trait_and_method(records).items():
        questions = [r["question_id"] for r in recs]
        trait_score, coherence, relevance, combined = (mean_ci(_metric(recs, m), questions, bounds=SCORE_RANGE) for m in METRICS)
        per_question = group_means(_metric(recs, "combined"), questions)
        rows.append(MethodRow(trait, method, len(set(questions)), len(recs), trait_score, coherence, relevance, combined, per_question))
    return sorted(rows, key=lambda r: (r.trait, _descending(r.combined[0])))


def overall_rows(rows: Sequence[MethodRow]) -> list[OverallRow]:
    """Each method's mean over the traits it was run on of its per-trait combined mean, highest first.

    The traits are the ones chosen for the bench, not a sample of all traits, so the interval is for these traits:
    questions are the units, each within its own trait (a stratum), and the variance is that of a mean of the
    traits' independent means, sum_t s_t^2 / n_t / T^2, with Welch-Satterthwaite degrees of freedom. Pooling every
    (trait, question) into one t interval would be wrong twice: it would weight traits by their number of questions,
    and it would count how much the traits' levels differ (a fixed feature of the chosen traits) as noise. With one
    trait this is that trait's own interval. Methods run on different traits are not comparable; `traits` says which.
    """
    by_method: dict[str, list[MethodRow]] = {}
    for row in rows:
        if row.per_question:
            by_method.setdefault(row.method, []).append(row)
    overall = [
        OverallRow(method, tuple(r.trait for r in mine), stratified_mean_ci([list(r.per_question.values()) for r in mine], bounds=SCORE_RANGE))
        for method, mine in by_method.items()
    ]
    return sorted(overall, key=lambda r: (-len(r.traits), _descending(r.combined[0]), r.method))


def stratified_mean_ci(strata: Sequence[Sequence[float]], confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None) -> Estimate:
    """(mean, low, high) of the mean of the strata's means, each stratum's units independent (Welch-Satterthwaite t);
    nan bounds when a stratum has fewer than two units."""
    from scipy.stats import t  # noqa: PLC0415

    if not strata:
        return math.nan, math.nan, math.nan
    mean = float(np.mean([np.mean(s) for s in strata]))
    if min(len(s) for s in strata) < 2:
        return mean, math.nan, math.nan
    variances = np.array([np.var(s, ddof=1) / len(s) for s in strata])
    if variances.sum() == 0:
        return mean, mean, mean
    dof = variances.sum() ** 2 / sum(v**2 / (len(s) - 1) for v, s in zip(variances, strata))
    half = float(t.ppf((1 + confidence) / 2, dof) * math.sqrt(variances.sum()) / len(strata))
    low, high = bounds or (-math.inf, math.inf)
    return mean, max(mean - half, low), min(mean + half, high)


def paired_comparisons(records: Iterable[Mapping[str, Any]], metric: str = "combined", baseline: str = "none") -> list[Comparison]:
    """Every pair of methods within each trait, paired by question, with Holm's p over that trait's pairs.

    Each pair reads higher - lower by the methods' mean `metric` over questions, except that `baseline` is always
    `b`: every method is compared with the baseline as method - baseline. A pair with fewer than MIN_QUESTIONS
    questions answered by both has nan p (never supported) and still counts in its trait's family.
    """
    if metric not in METRICS:
        raise BenchError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    by_trait: dict[str, dict[str, dict[Hashable, float]]] = {}
    for (trait, method), recs in _by_trait_and_method(records).items():
        by_trait.setdefault(trait, {})[method] = group_means(_metric(recs, metric), [r["question_id"] for r in recs])
    comparisons = []
    for trait, means in by_trait.items():
        ranked = sorted(means, key=lambda m: (m == baseline, _descending(_mean(means[m].values())), m))
        pairs = []
        for a, b in combinations(ranked, 2):
            diff, lo, hi = paired_difference_ci(means[a], means[b])
            differences = [means[a][q] - means[b][q] for q in means[a] if q in means[b]]
            pairs.append((a, b, len(differences), diff, lo, hi, _paired_t_p(differences)))
        adjusted = holm([p for *_, p in pairs])
        comparisons += [Comparison(trait, metric, *pair, p_holm) for pair, p_holm in zip(pairs, adjusted)]
    return comparisons


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error); a nan p stays nan and counts in the family as 1."""
    order = sorted(range(len(p_values)), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        if math.isnan(p_values[i]):
            break
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict_lines(rows: Sequence[MethodRow], comparisons: Sequence[Comparison], baseline: str = "none") -> list[str]:
    """Plain sentences per trait: which method leads on the combined score and whether the data support its lead over
    the runner-up, then which methods the data show above or below the baseline."""
    combined = {(c.trait, frozenset((c.a, c.b))): c for c in comparisons if c.metric == "combined"}
    lines = []
    for trait in dict.fromkeys(r.trait for r in rows):
        ranked = [r for r in rows if r.trait == trait]
        leader = ranked[0]
        if len(ranked) == 1:
            lines.append(f"{leader.method} is the only method on {trait} (combined {format_estimate(leader.combined)})")
            continue
        runner_up = ranked[1].method
        lead = combined.get((trait, frozenset((leader.method, runner_up))))
        text = f"{leader.method} leads {trait} (combined {format_estimate(leader.combined)}); "
        if lead is None or lead.questions < MIN_QUESTIONS:
            shared = 0 if lead is None else lead.questions
            lines.append(text + f"too few questions to compare it with {runner_up} ({shared} answered by both)")
            continue
        sign = 1 if lead.a == leader.method else -1
        diff, lo, hi = sign * lead.diff, *sorted((sign * lead.lo, sign * lead.hi))
        said = "is supported" if lead.supported else "is not supported"
        lines.append(text + f"its lead over {runner_up} ({diff:+.0f} [{lo:+.0f}, {hi:+.0f}]) {said} by the data (Holm p = {lead.p_holm:.2g})")
        keys = [(trait, frozenset((r.method, baseline))) for r in ranked if r.method != baseline]
        against = [combined[key] for key in keys if key in combined]
        if against:
            lines.append(_baseline_line(trait, baseline, against))
    return lines


def _baseline_line(trait: str, baseline: str, against: Sequence[Comparison]) -> str:
    """Which methods the data show above / below the baseline on one trait (Holm's p), and which neither."""
    above = [c.a for c in against if c.supported and c.diff > 0]
    below = [c.a for c in against if c.supported and c.diff < 0]
    neither = [c.a for c in against if not c.supported]
    parts = [f"{', '.join(names)} {where}" for names, where in ((above, "above"), (below, "below")) if names]
    shown = f"the data show {' and '.join(parts)} the baseline {baseline}" if parts else f"the data show no method apart from the baseline {baseline}"
    return f"on {trait}, {shown}" + (f"; not shown: {', '.join(neither)}" if parts and neither else "")


def _by_trait_and_method(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The records checked and grouped by (trait, method), in sorted order, each with its combined score."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seen: set[tuple[Any, ...]] = set()
    for record in records:
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise BenchError(f"a bench record lacks {', '.join(missing)}: {dict(record)}")
        key = tuple(record[k] for k in RECORD_KEYS[:4])
        if key in seen:
            raise BenchError(f"answer recorded twice: trait {key[0]}, method {key[1]}, question {key[2]}, sample {key[3]}")
        seen.add(key)
        for k in SCORE_KEYS:
            value = record[k]
            if value is not None and not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
                raise BenchError(f"{k} {value} outside 0-100: trait {key[0]}, method {key[1]}, question {key[2]}, sample {key[3]}")
        scores = [record[k] for k in SCORE_KEYS]
        groups.setdefault((record["trait"], record["method"]), []).append({**record, "combined": combined_score(*scores)})
    return dict(sorted(groups.items()))


def _metric(records: Sequence[Mapping[str, Any]], metric: str) -> list[float | None]:
    return [r[metric] for r in records]


def _paired_t_p(differences: Sequence[float]) -> float:
    """Two-sided paired t p-value of per-question differences against 0 (nan below MIN_QUESTIONS); with no spread,
    1 when every difference is 0 and 0 otherwise."""
    from scipy.stats import ttest_1samp  # noqa: PLC0415

    if len(differences) < MIN_QUESTIONS:
        return math.nan
    if np.ptp(differences) == 0:
        return float(differences[0] == 0)
    return float(ttest_1samp(differences, 0.0).pvalue)


def _mean(values: Iterable[float]) -> float:
    kept = list(values)
    return sum(kept) / len(kept) if kept else math.nan


def _descending(value: float) -> float:
    """Sort key: highest first, nan last."""
    return math.inf if math.isnan(value) else -value


def format_estimate(estimate: Estimate) -> str:
    """'61 [55, 67]', '61' where there is no interval (a single question), '' where there is no value."""
    mean, lo, hi = estimate
    if math.isnan(mean):
        return ""
    return f"{mean:.0f}" if math.isnan(lo) else f"{mean:.0f} [{lo:.0f}, {hi:.0f}]"
