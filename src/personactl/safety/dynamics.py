"""Step 4: how the safety-critical weights' Wanda scores move under fine-tuning, and which hypothesis that supports.

Hypothesis A (representational drift): the frozen weights' scores drop by more
than 10%: the model routes around them. Hypothesis B (global redistribution):
their scores stay within 5%, and any safety loss comes from elsewhere. The
verdict reads the 95% CI of the mean relative change of the frozen weights'
scores; when the CI straddles a boundary it says neither.

The matrices of one block are not independent: a Wanda score is |W| times the
norm of the matrix's input, and q, k, v (gate, up) read the same input, so a
change of that norm moves them together. The mean and its CI are therefore over
blocks (each block's matrices averaged first, Student's t over the block means,
`intervals.mean_ci`). A percentile bootstrap over matrices, used before,
covered the true change in 63% of simulated fine-tunes with such block effects
and read A in 20% of them at a true -10% (tests/test_calibration_safety.py).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping

import numpy as np
import torch

from ..intervals import mean_ci
from .masks import Tensors

DRIFT_DROP, STABLE_BAND = 0.10, 0.05
HISTOGRAM_BINS = np.linspace(-4.0, 3.0, 57)  # log10 of a Wanda score
_BLOCK = re.compile(r"\.(\d+)\.")


def block_of(matrix: str) -> Hashable:
    """The decoder block a matrix belongs to (its first number), or the matrix itself outside the blocks."""
    match = _BLOCK.search(matrix)
    return int(match.group(1)) if match else matrix


def change_ci(changes: Mapping[str, float]) -> dict[str, float]:
    """Mean of per-matrix relative changes over blocks, with its 95% CI (t over block means) and the counts.

    Matrices whose change is not a number (an empty set, a zero mean before) are left out."""
    finite = {name: value for name, value in changes.items() if np.isfinite(value)}
    groups = [block_of(name) for name in finite]
    mean, low, high = mean_ci(list(finite.values()), groups) if finite else (float("nan"),) * 3
    return {"mean": mean, "low": low, "high": high, "matrices": len(finite), "blocks": len(set(groups))}


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


def score_dynamics(before: Tensors, after: Tensors, frozen: Tensors, random: Tensors) -> dict:
    """Per matrix, per block and overall changes of the frozen, non-frozen and random weights' scores, and the verdict."""
    per_matrix: dict[str, dict[str, float]] = {}
    for name, mask in frozen.items():
        row: dict[str, float] = {}
        for label, picked in (("frozen", mask), ("others", ~mask), ("random", random[name])):
            row[f"{label}_mean"], row[f"{label}_median"] = _changes(before[name], after[name], picked)
        per_matrix[name] = row
    overall = {
        f"{label}_{stat}": change_ci({name: r[f"{label}_{stat}"] for name, r in per_matrix.items()})
        for label in ("frozen", "others", "random")
        for stat in ("mean", "median")
    }
    by_block: dict[int, list[dict[str, float]]] = {}
    for name, row in per_matrix.items():
        block = block_of(name)
        if isinstance(block, int):
            by_block.setdefault(block, []).append(row)
    blocks = {block: {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} for block, rows in sorted(by_block.items())}
    frozen_mean = overall["frozen_mean"]
    return {
        "overall": overall,
        "per_block": blocks,
        "per_matrix": per_matrix,
        "verdict": verdict(frozen_mean["mean"], frozen_mean["low"], frozen_mean["high"]),
        "histograms": {
            "bins": HISTOGRAM_BINS.tolist(),
            "before_frozen": _histogram(before, frozen, True),
            "before_others": _histogram(before, frozen, False),
            "after_frozen": _histogram(after, frozen, True),
            "after_others": _histogram(after, frozen, False),
        },
    }
