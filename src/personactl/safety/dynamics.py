"""Step 4: how the safety-critical weights' Wanda scores move under fine-tuning, and which hypothesis that supports.

Hypothesis A (representational drift): the frozen weights' scores drop by more
than 10%: the model routes around them. Hypothesis B (global redistribution):
their scores stay within 5%, and any safety loss comes from elsewhere. The
verdict reads the bootstrap CI (over matrices) of the mean relative change of
the frozen weights' scores; when the CI straddles a boundary it says neither.
"""

from __future__ import annotations

import re
import warnings
from typing import Mapping

import numpy as np
import torch

from .masks import Tensors

DRIFT_DROP, STABLE_BAND = 0.10, 0.05
HISTOGRAM_BINS = np.linspace(-4.0, 3.0, 57)  # log10 of a Wanda score
_BLOCK = re.compile(r"\.(\d+)\.")


def _ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean over matrices with its bootstrap 95% CI (percentile)."""
    from scipy.stats import bootstrap  # noqa: PLC0415

    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2 or data.min() == data.max():
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = bootstrap((data,), np.mean, n_resamples=2000, method="percentile", random_state=seed).confidence_interval
    return mean, float(ci.low), float(ci.high)


def _changes(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(relative change of the mean score over the set, median of the per-weight relative changes)."""
    b, a = before[mask].double(), after[mask].double()
    if not len(b):
        return float("nan"), float("nan")
    mean_change = float(a.mean() / b.mean() - 1.0) if float(b.mean()) > 0 else float("nan")
    positive = b > 0
    median_change = float((a[positive] / b[positive] - 1.0).median()) if bool(positive.any()) else float("nan")
    return mean_change, median_change


def _histogram(scores: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], inside: bool) -> list[int]:
    counts = np.zeros(len(HISTOGRAM_BINS) - 1, dtype=np.int64)
    for name, s in scores.items():
        picked = s[masks[name] if inside else ~masks[name]].double().clamp_min(1e-12).log10().numpy()
        counts += np.histogram(np.clip(picked, HISTOGRAM_BINS[0], HISTOGRAM_BINS[-1]), HISTOGRAM_BINS)[0]
    return counts.tolist()


def verdict(mean: float, low: float, high: float) -> str:
    """A, B or neither, from the CI of the frozen weights' mean relative score change."""
    if high < -DRIFT_DROP:
        return "A: representational drift (frozen weights' scores fell by more than 10%)"
    if low >= -STABLE_BAND and high <= STABLE_BAND:
        return "B: global redistribution (frozen weights' scores stayed within 5%)"
    return f"neither: the mean change {100 * mean:+.1f}% [{100 * low:+.1f}, {100 * high:+.1f}] is not clearly below -10% nor inside ±5%"


def score_dynamics(before: Tensors, after: Tensors, frozen: Tensors, random: Tensors, seed: int = 0) -> dict:
    """Per matrix, per block and overall changes of the frozen, non-frozen and random weights' scores, and the verdict."""
    per_matrix: dict[str, dict[str, float]] = {}
    for name, mask in frozen.items():
        row: dict[str, float] = {}
        for label, picked in (("frozen", mask), ("others", ~mask), ("random", random[name])):
            row[f"{label}_mean"], row[f"{label}_median"] = _changes(before[name], after[name], picked)
        per_matrix[name] = row
    groups = ("frozen", "others", "random")
    overall = {}
    for label in groups:
        for stat in ("mean", "median"):
            values = [r[f"{label}_{stat}"] for r in per_matrix.values() if np.isfinite(r[f"{label}_{stat}"])]
            mean, low, high = _ci(values, seed) if values else (float("nan"),) * 3
            overall[f"{label}_{stat}"] = {"mean": mean, "low": low, "high": high, "matrices": len(values)}
    by_block: dict[int, list[dict[str, float]]] = {}
    for name, row in per_matrix.items():
        match = _BLOCK.search(name)
        if match:
            by_block.setdefault(int(match.group(1)), []).append(row)
    blocks = {block: {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} for block, rows in sorted(by_block.items())}
    frozen_mean = overall["frozen_mean"]
    return {
        "overall": overall, "per_block": blocks, "per_matrix": per_matrix,
        "verdict": verdict(frozen_mean["mean"], frozen_mean["low"], frozen_mean["high"]),
        "histograms": {"bins": HISTOGRAM_BINS.tolist(),
                       "before_frozen": _histogram(before, frozen, True), "before_others": _histogram(before, frozen, False),
                       "after_frozen": _histogram(after, frozen, True), "after_others": _histogram(after, frozen, False)},
    }
