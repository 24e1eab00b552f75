"""Why a mapped persona vector does or does not steer the target: three hypotheses, measured.

- A, magnitude: the mapped vector has the right direction but the wrong length.
  Measured by steering with it rescaled to the oracle's norm.
- B, basis: the map does not find the target's own direction. Measured by the
  cosine to the oracle against a null of random rotations, and Procrustes vs ridge.
- C, layer: the effect lives at another target layer than the one mapped to.
  Measured by applying the mapped vector at several target layers.

Each `hypothesis_*` returns the measurements and a one-line conclusion drawn
from them; `write_hypothesis` stores it as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import write_text_atomic

MIN_COHERENCE = 50.0  # a condition below this is broken text, whatever its trait score
MEANINGFUL = 10.0  # trait points that count as a change


def _rows(rows: Sequence[dict[str, Any]], group: str, method: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["group"] == group and r["method"] == method), key=lambda r: (r["layer"], r["coef"]))


def best_coherent(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the highest trait among those still coherent (None if none is)."""
    ok = [r for r in rows if r["coherence"] >= MIN_COHERENCE]
    return max(ok, key=lambda r: r["trait"]) if ok else None


def _trait(row: dict[str, Any] | None) -> float:
    return row["trait"] if row is not None else float("nan")


def _said(row: dict[str, Any] | None) -> str:
    return f"{row['trait']:.1f}" if row is not None else "n/a (never coherent)"


def _brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    keys = ("method", "layer", "coef", "applied_norm", "trait", "trait_lo", "trait_hi", "coherence", "collapse_rate")
    return {k: row[k] for k in keys} if row is not None else None


def hypothesis_a(rows: Sequence[dict[str, Any]], norms: dict[str, float]) -> dict[str, Any]:
    """Magnitude: raw ridge vs ridge rescaled to the oracle norm, both over the same coefficients."""
    raw, rescaled = _rows(rows, "main", "ridge"), _rows(rows, "A", "ridge@oracle_norm")
    best_raw, best_rescaled = best_coherent(raw), best_coherent(rescaled)
    gain = _trait(best_rescaled) - _trait(best_raw)
    ratio = norms["oracle"] / norms["ridge"] if norms["ridge"] else float("inf")
    if best_rescaled is None:
        conclusion = f"rescaling to the oracle norm (x{ratio:.2f}) breaks coherence at every coefficient: magnitude is not the fix"
    elif not np.isfinite(gain) or gain >= MEANINGFUL:
        conclusion = (f"supported: at the oracle norm (x{ratio:.2f}) the mapped vector reaches trait {_said(best_rescaled)} "
                      f"vs {_said(best_raw)} at its own norm, coherence {best_rescaled['coherence']:.1f}")
    elif gain <= -MEANINGFUL:
        conclusion = (f"not supported: rescaling to the oracle norm (x{ratio:.2f}) lowers the best coherent trait "
                      f"({_said(best_raw)} -> {_said(best_rescaled)}): the mapped vector's own length is not what holds it back")
    else:
        conclusion = (f"not supported: rescaling to the oracle norm (x{ratio:.2f}) changes the best coherent trait by only "
                      f"{gain:+.1f} ({_said(best_raw)} -> {_said(best_rescaled)})")
    return {
        "hypothesis": "A: magnitude mismatch", "norms": norms, "oracle_to_ridge_norm_ratio": ratio,
        "ridge": [_brief(r) for r in raw], "ridge_at_oracle_norm": [_brief(r) for r in rescaled],
        "best_ridge": _brief(best_raw), "best_ridge_at_oracle_norm": _brief(best_rescaled), "trait_gain": gain,
        "conclusion": conclusion,
    }


def hypothesis_b(rows: Sequence[dict[str, Any]], cosines: dict[str, float], null: np.ndarray) -> dict[str, Any]:
    """Basis: cosine to the oracle vs random rotations; Procrustes vs ridge at the oracle norm."""
    p_ridge = float((np.abs(null) >= abs(cosines["ridge"])).mean())
    best = {m: best_coherent(_rows(rows, "A" if m == "ridge" else "B", f"{m}@oracle_norm")) for m in ("ridge", "procrustes", "random")}
    null_summary = {"n": int(len(null)), "mean_abs": float(np.abs(null).mean()), "q95_abs": float(np.quantile(np.abs(null), 0.95))}
    if p_ridge > 0.05:
        conclusion = (f"supported: the ridge vector's cosine to the oracle ({cosines['ridge']:.3f}) is within the random-rotation null "
                      f"(95% of |cos| below {null_summary['q95_abs']:.3f}, p = {p_ridge:.2f}): the map does not find the target's direction")
    else:
        conclusion = (f"partly: the ridge vector points towards the oracle well beyond chance (cos {cosines['ridge']:.3f} vs null 95% "
                      f"{null_summary['q95_abs']:.3f}, p < {max(p_ridge, 1 / len(null)):.3g}), yet far from 1; at the oracle norm the best "
                      f"coherent trait is {_said(best['ridge'])} for ridge, {_said(best['procrustes'])} for Procrustes, "
                      f"{_said(best['random'])} for random")
    return {
        "hypothesis": "B: basis mismatch", "cosine_to_oracle": cosines, "null_random_rotation": null_summary,
        "p_ridge_vs_null": p_ridge, "best_at_oracle_norm": {m: _brief(r) for m, r in best.items()}, "conclusion": conclusion,
    }


def hypothesis_c(rows: Sequence[dict[str, Any]], mapped_layer: int) -> dict[str, Any]:
    """Layer: the mapped vector (at each layer's oracle norm) and the oracle, across target layers."""
    mapped, oracle = _rows(rows, "C", "ridge@oracle_norm"), _rows(rows, "C", "oracle")
    coherent = [r for r in mapped if r["coherence"] >= MIN_COHERENCE]
    peak = max(coherent, key=lambda r: r["trait"]) if coherent else None
    at_mapped = next((r for r in mapped if r["layer"] == mapped_layer), None)
    if peak is None:
        conclusion = "no target layer keeps the mapped vector coherent at this coefficient"
    elif peak["layer"] != mapped_layer and _trait(peak) - _trait(at_mapped) >= MEANINGFUL:
        conclusion = (f"supported: the mapped vector works best at target layer {peak['layer']} (trait {_said(peak)}), "
                      f"not at the mapped layer {mapped_layer} ({_said(at_mapped)})")
    else:
        conclusion = (f"not supported: the mapped layer {mapped_layer} (trait {_said(at_mapped)}) is at most "
                      f"{MEANINGFUL:g} points below the best layer {peak['layer']} ({_said(peak)})")
    return {
        "hypothesis": "C: layer correspondence", "mapped_layer": mapped_layer,
        "mapped_by_layer": [_brief(r) for r in mapped], "oracle_by_layer": [_brief(r) for r in oracle],
        "peak": _brief(peak), "conclusion": conclusion,
    }


def write_hypothesis(out_dir: str | Path, letter: str, source: str, target: str, trait: str, payload: dict[str, Any]) -> Path:
    """hypothesis_<letter>_<source>_to_<target>_<trait>.json in `out_dir`."""
    slug = lambda s: "".join(c if c.isalnum() or c in "-." else "_" for c in s)  # noqa: E731
    path = Path(out_dir) / f"hypothesis_{letter}_{slug(source)}_to_{slug(target)}_{slug(trait)}.json"
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))
    return path
