"""Why a mapped persona vector does or does not steer the target: three hypotheses and the success
criteria, each answered per question with its uncertainty.

Every row holds per-answer scores (`trait_scores`, `coherence_scores`, `collapsed`) and the question
of each (`questions`); the question is the unit. Where a condition must be chosen (an alpha, a norm,
a layer) it is chosen on one half of the questions and scored on the other (`paired.crossfit`), and
two conditions are compared by a paired test on the per-question means (`paired.compare`: the mean
difference with its 95% CI and p from one t, its error a jackknife over questions that re-makes the
picks). The collapse criterion's rate gets Wilson's interval (`Choice.rate`).

- A, magnitude: "the mapped vector has the right direction but the wrong length". The ridge
  direction and the oracle are both applied at the same applied norms (multiples of the oracle
  norm, wider than the alpha grid); each side's best coherent norm is chosen on held-out questions.
  If the ridge direction is significantly below the oracle at its best norm, no length closes the
  gap (not supported); if it is not, and both it and the oracle beat the unsteered baseline, a
  length does (supported); otherwise the questions cannot tell (undecided). Comparing rescaled ridge with raw ridge instead would only test the alpha grid: the
  two differ by one scale factor.
- B, basis: "the map does not find the target's own direction". The cosine to the oracle against
  random directions (a permutation p), and the ridge direction at its best multiple of the oracle
  norm against a random direction of the same length, coherent or not (paired). Supported when
  neither shows the direction, not supported when both do, partly otherwise.
- C, layer: "the effect lives at another target layer". The mapped vector at the best other layer
  (chosen on held-out questions) against the mapped layer, paired.

Conclusions are worded from the numbers; `write_hypothesis` stores each as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from .paired import LEVEL, Choice, compare, crossfit, fixed, matched

BRIEF = ("method", "layer", "coef", "applied_norm", "trait", "trait_lo", "trait_hi", "coherence", "collapse_rate")


def _rows(rows: Sequence[dict[str, Any]], groups: str, method: str) -> list[dict[str, Any]]:
    """Rows of `method` in any of the groups named by the letters/words of `groups` (e.g. "main A")."""
    return sorted((r for r in rows if r["group"] in groups.split() and r["method"] == method), key=lambda r: (r["layer"], r["coef"]))


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in BRIEF}


def _unsteered(rows: Sequence[dict[str, Any]]) -> Choice:
    return fixed(next(r for r in rows if r["group"] == "main" and r["method"] == "unsteered"))


def _norms(rows: Sequence[dict[str, Any]]) -> str:
    norms = [r["applied_norm"] for r in rows]
    return f"applied norms {min(norms):.0f}-{max(norms):.0f}"


def hypothesis_a(rows: Sequence[dict[str, Any]], norms: dict[str, float]) -> dict[str, Any]:
    """Magnitude: does the ridge direction, at some applied norm, reach the oracle's trait level?"""
    ridge_rows, oracle_rows = _rows(rows, "A", "ridge@oracle_norm"), _rows(rows, "main A", "oracle")
    ridge, oracle, base = crossfit(ridge_rows), crossfit(oracle_rows), _unsteered(rows)
    payload = {
        "hypothesis": "A: magnitude mismatch",
        "norms": norms,
        "ridge_direction": [_brief(r) for r in ridge_rows],
        "oracle": [_brief(r) for r in oracle_rows],
    }
    if ridge is None or oracle is None:
        broken = "the ridge direction" if ridge is None else "the oracle"
        return {**payload, "verdict": "undecided", "conclusion": f"undecided: {broken} is coherent at none of the {_norms(ridge_rows + oracle_rows)}"}
    gap, reach, moved = compare(ridge, oracle), compare(oracle, base), compare(ridge, base)
    said = (
        f"the ridge direction at its best norm ({ridge.chosen('applied_norm')}) scores {ridge.said()} vs the oracle's "
        f"{oracle.said()} ({oracle.chosen('applied_norm')}), {gap.said()}"
    )
    if gap.lower:
        verdict, conclusion = "not supported", f"not supported: over {_norms(ridge_rows)}, {said}: no length tested closes the gap"
    elif not reach.higher:
        verdict = "undecided"
        conclusion = f"undecided: {said}, but the oracle is not above the unsteered baseline ({reach.said()}): no level to reach"
    elif moved.higher:
        verdict, conclusion = "supported", f"supported: {said}; the ridge direction there is above the unsteered baseline ({moved.said()})"
    else:
        verdict = "undecided"
        conclusion = (
            f"undecided: {said}, but the ridge direction there is not above the unsteered baseline ({moved.said()}) "
            f"while the oracle is ({reach.said()})"
        )
    return {
        **payload,
        "picks": {"ridge": ridge.picks, "oracle": oracle.picks},
        "ridge_vs_oracle": gap.record(),
        "oracle_vs_unsteered": reach.record(),
        "ridge_vs_unsteered": moved.record(),
        "verdict": verdict,
        "conclusion": conclusion,
    }


def null_test(cosine: float, null: np.ndarray) -> dict[str, Any]:
    """Permutation test of |cosine| against |null|: p = (1 + #null at least as large) / (n + 1), and its words."""
    n, k = len(null), int((np.abs(null) >= abs(cosine)).sum())
    p, percentile = (k + 1) / (n + 1), 100.0 * (n - k) / n
    where = (
        f"above all {n} random directions (p <= 1/{n + 1})"
        if k == 0
        else f"at percentile {percentile:.0f} of {n} random directions' |cos| (p = {p:.2g})"
    )
    return {
        "cosine": cosine,
        "n": n,
        "at_least_as_large": k,
        "p": p,
        "percentile": percentile,
        "said": f"cosine {cosine:.3f} to the oracle (cos^2 {cosine**2:.2f}), {where}",
    }


def hypothesis_b(rows: Sequence[dict[str, Any]], cosines: dict[str, float], null: np.ndarray) -> dict[str, Any]:
    """Basis: is the ridge direction the oracle's more than chance, in angle and in effect at the oracle's norm?"""
    test = null_test(cosines["ridge"], null)
    random_rows = _rows(rows, "B", "random@oracle_norm")
    ridge = crossfit([r for r in _rows(rows, "A", "ridge@oracle_norm") if r["coef"] in {r["coef"] for r in random_rows}])
    random = matched(random_rows, ridge) if ridge else None
    procrustes = matched(_rows(rows, "B", "procrustes@oracle_norm"), ridge) if ridge else None
    angle = test["p"] < LEVEL
    if ridge is None or random is None:
        effect = None
        behaviour = "no effect comparison: the ridge direction is coherent at no multiple of the oracle norm tested"
    else:
        effect = compare(ridge, random)
        behaviour = (
            f"at the same applied norms ({ridge.chosen('applied_norm')}) the ridge direction scores {ridge.said()} "
            f"vs a random direction's {random.said()} (coherence {random.mean('coherence')[0]:.1f}), {effect.said()}"
        )
    if procrustes is not None:
        behaviour += f"; Procrustes {procrustes.said()} (coherence {procrustes.mean('coherence')[0]:.1f})"
    above_chance = effect is not None and effect.higher
    verdict = "not supported" if angle and above_chance else "supported" if not angle and not above_chance else "partly"
    null_summary = {"n": int(len(null)), "mean_abs": float(np.abs(null).mean()), "q95_abs": float(np.quantile(np.abs(null), 0.95))}
    return {
        "hypothesis": "B: basis mismatch",
        "cosine_to_oracle": cosines,
        "null_random_rotation": null_summary,
        "null_test": test,
        "p_ridge_vs_null": test["p"],
        "ridge_vs_random": effect.record() if effect else None,
        "picks": {m: c.picks for m, c in (("ridge", ridge), ("random", random), ("procrustes", procrustes)) if c is not None},
        "verdict": verdict,
        "conclusion": f"{verdict}: {test['said']}; {behaviour}",
    }


def hypothesis_c(rows: Sequence[dict[str, Any]], mapped_layer: int) -> dict[str, Any]:
    """Layer: does the mapped vector (at each layer's oracle norm) do better at another target layer?"""
    mapped, oracle = _rows(rows, "C", "ridge@oracle_norm"), _rows(rows, "C", "oracle")
    here = next(r for r in mapped if r["layer"] == mapped_layer)
    other = crossfit([r for r in mapped if r["layer"] != mapped_layer])
    payload = {
        "hypothesis": "C: layer correspondence",
        "mapped_layer": mapped_layer,
        "mapped_by_layer": [_brief(r) for r in mapped],
        "oracle_by_layer": [_brief(r) for r in oracle],
    }
    if other is None:
        return {
            **payload,
            "verdict": "not supported",
            "conclusion": f"not supported: no target layer other than {mapped_layer} keeps the mapped vector coherent",
        }
    diff = compare(other, fixed(here))
    said = (
        f"the best other layer ({other.chosen('layer')}) scores {other.said()} vs {fixed(here).said()} "
        f"at the mapped layer {mapped_layer}, {diff.said()}"
    )
    verdict = "supported" if diff.higher else "not supported"
    return {**payload, "picks": other.picks, "other_vs_mapped": diff.record(), "verdict": verdict, "conclusion": f"{verdict}: {said}"}


def _threshold(lo: float, hi: float, limit: float, above: bool) -> bool | None:
    """True when the whole CI [lo, hi] is on the good side of `limit`, False when all of it is on the other, None when it straddles."""
    if above:
        return True if lo >= limit else False if hi < limit else None
    return True if hi < limit else False if lo >= limit else None


VERDICT = {True: "met", False: "not met", None: "undecided: the CI straddles the threshold"}


def success_criteria(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference design's criteria for ridge, its alpha chosen on held-out questions; each with its CI or paired test."""
    ridge_rows, oracle_rows = _rows(rows, "main", "ridge"), _rows(rows, "main", "oracle")
    ridge = crossfit(ridge_rows, fallback=min(ridge_rows, key=lambda r: r["coef"]))
    oracle = crossfit(oracle_rows, fallback=min(oracle_rows, key=lambda r: r["coef"]))
    base = _unsteered(rows)
    coherence, collapse = ridge.mean("coherence"), ridge.rate("collapsed")
    above, gap = compare(ridge, base), compare(oracle, ridge)
    alpha = " / ".join(f"{p['coef']:g}" for p in ridge.picks)
    common = {"alpha": alpha, "picks": ridge.picks}
    met_coherence, met_collapse = _threshold(*coherence[1:], 50.0, above=True), _threshold(*collapse[1:], 0.3, above=False)
    return [
        {
            "criterion": "mapped coherence >= 50",
            "measured": coherence[0],
            "lo": coherence[1],
            "hi": coherence[2],
            "met": met_coherence,
            "verdict": VERDICT[met_coherence],
            "said": f"{coherence[0]:.1f} [{coherence[1]:.1f}, {coherence[2]:.1f}]",
            **common,
        },
        {
            "criterion": "trait above the unsteered baseline (paired)",
            "measured": ridge.mean()[0],
            "baseline": base.mean()[0],
            **above.record(),
            "met": above.higher,
            "verdict": "met" if above.higher else "not met",
            "said": f"ridge {ridge.said()} vs unsteered {base.said()}, {above.said()}",
            **common,
        },
        {
            "criterion": "collapse rate < 30%",
            "measured": collapse[0],
            "lo": collapse[1],
            "hi": collapse[2],
            "met": met_collapse,
            "verdict": VERDICT[met_collapse],
            "said": f"{100 * collapse[0]:.0f}% [{100 * collapse[1]:.0f}%, {100 * collapse[2]:.0f}%]",
            **common,
        },
        {
            "criterion": "gap to the oracle (each at its held-out alpha), smaller is better",
            "measured": gap.diff,
            **gap.record(),
            "met": None,
            "verdict": "-",
            "said": f"oracle {oracle.said()} ({oracle.chosen()}) vs ridge {ridge.said()}, {gap.said()}",
            **common,
        },
    ]


def write_hypothesis(out_dir: str | Path, letter: str, source: str, target: str, trait: str, payload: dict[str, Any]) -> Path:
    """hypothesis_<letter>_<source>_to_<target>_<trait>.json in `out_dir`."""
    slug = lambda s: "".join(c if c.isalnum() or c in "-." else "_" for c in s)  # noqa: E731
    path = Path(out_dir) / f"hypothesis_{letter}_{slug(source)}_to_{slug(target)}_{slug(trait)}.json"
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))
    return path
