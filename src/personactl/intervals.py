"""Confidence intervals that respect questions: answers to one question are not independent.

Every mean a run reports (trait, coherence, collapse, a paired difference) is a
mean over *questions*: each question's answers and samples are averaged first,
and the interval is Student's t on those per-question means. That is the
standard cluster-level analysis; with 5-20 questions it keeps 95% coverage where
a percentile bootstrap over questions does not (simulated: 83% at 5 questions,
89% at 10, 91% at 20; t: 95% at each), and a bootstrap over answers counts the
samples of one question as independent. Without groups every value is its own
unit, which is right for independent items such as training samples.

The AUROC of positive vs negative answers gets the clustered variance of
Obuchowski (1997): the structural components of DeLong's estimator are summed
per question before their variance is taken.

Nothing here resamples, so a summary is a function of the set of values: the
order in which records were written cannot change a bound.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import numpy as np

CONFIDENCE = 0.95


def group_means(values: Sequence[float | None], groups: Sequence[Hashable] | None = None) -> dict[Hashable, float]:
    """The mean of each group's finite values (groups with none are left out); without groups, each value alone."""
    keys: Sequence[Hashable] = range(len(values)) if groups is None else groups
    if len(keys) != len(values):
        raise ValueError(f"{len(values)} values but {len(keys)} group labels")
    sums: dict[Hashable, list[float]] = {}
    for key, value in zip(keys, values):
        if value is not None and math.isfinite(value):
            sums.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in sums.items()}


def t_interval(units: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of independent units (nan bounds with one unit)."""
    from scipy.stats import t  # noqa: PLC0415

    data = np.asarray(units, dtype=float)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf((1 + confidence) / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, max(mean - half, float(data.min())), min(mean + half, float(data.max()))


def mean_ci(
    values: Sequence[float | None], groups: Sequence[Hashable] | None = None, *, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over groups (questions), each group's values averaged first.

    The bounds never leave the range of the group means (a rate's interval stays in [0, 1]).
    """
    return t_interval(list(group_means(values, groups).values()), confidence)


def paired_difference_ci(
    a: dict[Hashable, float], b: dict[Hashable, float], *, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high) of a - b over the groups (questions) present in both, e.g. two `group_means`."""
    shared = [key for key in a if key in b]
    return t_interval([a[key] - b[key] for key in shared], confidence)


def auroc_ci(
    pos: Sequence[float], neg: Sequence[float], pos_groups: Sequence[Hashable], neg_groups: Sequence[Hashable],
    *, confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(AUROC, low, high) of positive vs negative scores, clustered by question (Obuchowski 1997).

    The variance sums each question's placement values before taking their spread, so a question with many
    answers counts once, and the bound uses Student's t with (questions - 1) degrees of freedom. At perfect
    separation that variance is zero; the bound then falls back to the exact one-sided bound on the share of
    questions that separate perfectly, (1 - confidence) ** (1 / questions), so 5 questions cannot look certain.
    """
    from scipy.stats import t  # noqa: PLC0415

    x, y = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan, math.nan
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    auroc = float(psi.mean())
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)  # placement of each positive among negatives, and back
    clusters = list(dict.fromkeys([*pos_groups, *neg_groups]))
    if len(clusters) < 2:
        return auroc, math.nan, math.nan
    index = {c: i for i, c in enumerate(clusters)}
    pg, ng = np.array([index[g] for g in pos_groups]), np.array([index[g] for g in neg_groups])
    k = len(clusters)
    m_i, n_i = np.bincount(pg, minlength=k), np.bincount(ng, minlength=k)
    d10 = np.bincount(pg, weights=v10, minlength=k) - m_i * auroc
    d01 = np.bincount(ng, weights=v01, minlength=k) - n_i * auroc
    scale = k / (k - 1)
    s10, s01, s11 = scale * (d10 @ d10) / x.size, scale * (d01 @ d01) / y.size, scale * (d10 @ d01)
    variance = max(s10 / x.size + s01 / y.size + 2 * s11 / (x.size * y.size), 0.0)
    half = float(t.ppf((1 + confidence) / 2, k - 1) * math.sqrt(variance))
    lo, hi = max(auroc - half, 0.0), min(auroc + half, 1.0)
    exact = (1 - confidence) ** (1 / k)
    if auroc == 1.0:
        lo = min(lo, exact)
    elif auroc == 0.0:
        hi = max(hi, 1 - exact)
    return auroc, lo, hi
