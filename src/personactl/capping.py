"""Activation capping: keep a persona's projection inside the range seen in normal behaviour.

As in the Assistant Axis work (2026), the projection h . u of the hidden state on the unit direction u is clamped
to [low, high] over a band of layers, and h moves only along u. A state already inside the range is left exactly
as it is, so capping changes nothing while the model behaves normally and pulls it back only when a prompt pushes
it out (a persona-injecting system prompt, a role-play jailbreak, a drifting conversation).

A range is written `HIGH` or `LOW:HIGH` (an empty side is open). Each side is a number in the vector's own units
(the projection on its unit direction at that layer) or a statistic of the projections the extraction stored for
its answers at that layer: `neg-p90` is the 90th percentile of the non-trait answers, `pos-p10` the 10th of the
trait answers; `min`, `max` and `mean` work too. So `neg-p90` caps the trait at what 90% of normal answers stay
under, and `neg-p10:` keeps a floor instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from .errors import SteeringError
from .monitor import stored_projections
from .steering import Bounds, Coefficient, SteeringTerm, StepPositions
from .vectors import PersonaVector

DEFAULT_CAP = "neg-p90"
_STATISTIC = re.compile(r"^(pos|neg)-(p(\d+(?:\.\d+)?)|min|max|mean)$")


class CapRangeError(SteeringError):
    """A cap range that cannot be read or resolved."""


def parse_cap_at(spec: str) -> tuple[str | None, str | None]:
    """(low, high) sides of a range spec, checked for syntax; None is an open side."""
    text = spec.strip()
    low, high = text.split(":", 1) if ":" in text else ("", text)
    sides = (low.strip() or None, high.strip() or None)
    if sides == (None, None):
        raise CapRangeError(f"cap range '{spec}' is empty: give HIGH or LOW:HIGH, e.g. neg-p90 or -2:3.5")
    for side in sides:
        if side is not None:
            _check_side(side, spec)
    return sides


def _check_side(side: str, spec: str) -> None:
    try:
        float(side)
        return
    except ValueError:
        pass
    match = _STATISTIC.match(side)
    if match is None or (match.group(3) is not None and not 0 <= float(match.group(3)) <= 100):
        raise CapRangeError(
            f"'{side}' in cap range '{spec}' is neither a number nor a statistic: use pos-/neg- with pNN (0-100), min, max or mean, e.g. neg-p90"
        )


def cap_bounds(vector: PersonaVector, layers: Sequence[int], at: str = DEFAULT_CAP) -> dict[int, Bounds]:
    """[low, high] of h . u at each layer for the range spec `at` (see the module docstring)."""
    low, high = parse_cap_at(at)
    stored = stored_projections(vector)
    bounds = {}
    for layer in layers:
        pair = (_resolve(low, vector, layer, stored, at), _resolve(high, vector, layer, stored, at))
        if pair[0] is not None and pair[1] is not None and pair[0] > pair[1]:
            raise CapRangeError(f"cap range '{at}' is empty at layer {layer}: low {pair[0]:.3g} is above high {pair[1]:.3g}")
        bounds[layer] = pair
    return bounds


def _resolve(side: str | None, vector: PersonaVector, layer: int, stored: tuple | None, spec: str) -> float | None:
    if side is None:
        return None
    try:
        return float(side)
    except ValueError:
        pass
    if stored is None:
        raise CapRangeError(
            f"'{side}' needs the projections an extraction stores, and this {vector.trait} vector has none: "
            "re-extract it with `personactl extract`, or give the range in numbers (e.g. -2:3.5)"
        )
    layers, pos, neg = stored
    if layer not in layers:
        raise CapRangeError(f"the {vector.trait} vector stored no projections at layer {layer}: use one of {layers[0]}..{layers[-1]}")
    match = _STATISTIC.match(side)
    assert match is not None  # parse_cap_at checked it
    values = (pos if match.group(1) == "pos" else neg)[:, layers.index(layer)].float()
    statistic = match.group(2)
    if match.group(3) is not None:
        return float(torch.quantile(values, float(match.group(3)) / 100))
    return float({"min": values.min, "max": values.max, "mean": values.mean}[statistic]())


def cap_term(
    vector: PersonaVector,
    layers: int | Sequence[int],
    at: str = DEFAULT_CAP,
    coef: Coefficient = 1.0,
    positions: StepPositions = "all",
) -> SteeringTerm:
    """A steering term that caps `vector`'s projection to the range `at` at `layers` (coef 1 = clamp fully)."""
    band = [layers] if isinstance(layers, int) else list(layers)
    return SteeringTerm(vector, band, coef, positions, op="cap", bounds=cap_bounds(vector, band, at))
