"""One tool's vector format, and what every export and import does whatever the format.

An export chooses the layers, scales them by `coef` and describes the result (a `Convention`) before the
format writes it. An import takes what a format's reader found in a file or object (`Found`), moves its
layer keys into personactl's numbering, checks it against the model (hidden size, depth, the recorded
config fingerprint or model hint) and says in one line what it had to assume.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path, write_text_atomic
from ..models import Backbone
from ..vectors import PersonaVector
from .convention import Convention, Numbering, PortableFormatError, config_fingerprint, family, model_config

_SHORT_NUMBERING = {
    "hidden_states": "index L is HF hidden_states[L], the output of block L-1 (our layer L)",
    "block": "key N is the output of decoder block N (our layer N+1)",
}


@dataclass(frozen=True)
class Found:
    """What a format's reader found, before any check against a model."""

    directions: dict[int, torch.Tensor]  # keys in the format's own numbering; negative keys count back from the last block
    source: str
    convention: Convention | None = None
    model_hint: str | None = None  # a model type or llama.cpp architecture the source names
    depth: int | None = None  # the number of blocks the source itself implies (a full [n+1, hidden] tensor)
    assumed: tuple[str, ...] = ()  # what this format leaves unsaid, beyond the numbering, operation and normalisation
    trait: str | None = None


@dataclass(frozen=True)
class VectorFormat:
    """A format: its names, its layer numbering, the lowest personactl layer it can hold, its reader and writer."""

    name: str
    tool: str
    summary: str
    usage: str  # how the tool applies a written file ({path} is the file)
    suffix: str
    numbering: Numbering
    lowest_layer: int
    lowest_reason: str
    write: Callable[[PersonaVector, Path, Convention], None]  # the scaled vector's `convention.layers` to a (temporary) path
    read: Callable[[Any], Found]  # a path, or the tool's own object
    error: type[PortableFormatError] = PortableFormatError
    sidecar: bool = False  # the file cannot hold the convention: it goes to FILE.json beside it

    def key(self, layer: int) -> int:
        """The format's own index of personactl layer `layer`."""
        return layer - 1 if self.numbering == "block" else layer


def prepare_export(
    spec: VectorFormat,
    vector: PersonaVector,
    *,
    layers: Sequence[int] | None = None,
    coef: float = 1.0,
    backbone: Backbone | None = None,
    model_hint: str | None = None,
) -> tuple[PersonaVector, Convention]:
    """`coef * vector` at the chosen layers (default: every non-zero one the format holds), and its convention."""
    if backbone is not None:
        vector.check_compatible(backbone)
    n_layers = vector.n_layers
    low = spec.lowest_layer
    if layers is None:
        chosen = [layer for layer in range(low, n_layers + 1) if float(vector.directions[layer].norm()) > 0]
        if not chosen:
            raise spec.error(f"vector '{vector.trait}' is zero at every layer {spec.tool} can steer ({low}..{n_layers})")
    else:
        chosen = sorted({int(layer) for layer in layers})
        if not chosen:
            raise spec.error("no layers to export: give layers such as 18-28, or all")
    for layer in chosen:
        if 0 <= layer < low:
            raise spec.error(f"layer {layer} cannot be exported to {spec.tool}: {spec.lowest_reason}: choose layers {low}..{n_layers}")
        if not low <= layer <= n_layers:
            raise spec.error(f"layer {layer} is out of range: this vector has layers {low}..{n_layers} to export")
    scaled = torch.zeros_like(vector.directions)
    scaled[chosen] = float(coef) * vector.directions[chosen]
    convention = Convention(
        format=spec.name,
        numbering=spec.numbering,
        layers=chosen,
        coef=float(coef),
        trait=vector.trait,
        model=backbone.name if backbone is not None else vector.model,
        model_type=backbone.model_type if backbone is not None else (model_hint or ""),
        config=model_config(backbone) if backbone is not None else {},
        vector_fingerprint=vector.fingerprint(),
    )
    return PersonaVector(scaled, trait=vector.trait, model=vector.model, method=vector.method), convention


def sidecar_path(path: str | Path) -> Path:
    """Where the convention of a file that cannot hold one is written: FILE.json beside it (pirate.pt.json)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_atomic(spec: VectorFormat, scaled: PersonaVector, path: str | Path, convention: Convention) -> Path:
    """The format's writer into a temporary file renamed over `path` once complete (and its sidecar, if any)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        spec.write(scaled, tmp, convention)
    if spec.sidecar:
        write_text_atomic(sidecar_path(path), convention.to_json())
    return path


def finish_import(spec: VectorFormat, found: Found, backbone: Backbone | None = None, *, trait: str | None = None) -> PersonaVector:
    """A persona vector [n_layers+1, hidden] from what a reader found, checked against `backbone` where given.

    Mismatches that make steering impossible (hidden size, depth, layers recorded but absent) are errors;
    a vector made for another model of the same shape (another config fingerprint, another model family)
    loads with a warning. `extra["assumed"]` says in one line what the source left unsaid.
    """
    source, convention = found.source, found.convention
    if convention is not None:
        if convention.numbering != spec.numbering:
            raise spec.error(
                f"{source} records {convention.numbering} layer numbering, {spec.tool} uses {spec.numbering}: it was written for another tool"
            )
        problem = convention.unsupported()
        if problem:
            raise spec.error(f"{source}: {problem}")
    recorded_depth = convention.config.get("num_hidden_layers") if convention is not None and convention.config else None
    depth = found.depth or recorded_depth
    rows = _our_layers(spec, found, backbone.n_layers if backbone is not None else depth)
    hidden = _hidden_size(spec, source, rows)
    if convention is not None:
        missing = sorted(set(convention.layers) - set(rows))
        if missing:
            raise spec.error(f"{source}: layers {missing} are recorded in its convention but missing from the file")
    assumed = [] if convention is not None else [_SHORT_NUMBERING[spec.numbering], "operation add", "no normalisation", *found.assumed]
    if backbone is not None:
        n_layers = _check_model(spec, found, backbone, rows, hidden, depth)
    else:
        n_layers = depth or max(rows)
        assumed.append("no model given, so its hidden size and depth are unchecked")
    directions = torch.zeros(n_layers + 1, hidden)
    for layer, values in rows.items():
        directions[layer] = values
    extra = {
        "source": source,
        "source_format": spec.name,
        "layers": sorted(layer for layer, values in rows.items() if bool(values.any())),  # those that steer
        "model_hint": found.model_hint,
        "assumed": "; ".join(assumed) if assumed else "nothing: the source records its convention",
        "convention": None if convention is None else convention.to_json(),
    }
    name = trait or found.trait or (convention.trait if convention is not None else None) or Path(source).stem
    model = backbone.name if backbone is not None else (convention.model if convention is not None else "unknown")
    return PersonaVector(directions, trait=name, model=model, method="imported", extra=extra)


def _our_layers(spec: VectorFormat, found: Found, blocks: int | None) -> dict[int, torch.Tensor]:
    """The found directions keyed by personactl layer (negative keys placed from the last block)."""
    if not found.directions:
        raise spec.error(f"{found.source} holds no directions")
    negative = sorted(key for key in found.directions if key < 0)
    if negative and blocks is None:
        raise spec.error(f"{found.source}: layer ids {negative} count back from the last block: give the model (--model) to place them")
    count = (blocks or 0) + (0 if spec.numbering == "block" else 1)  # how many keys the format has for this model
    rows: dict[int, torch.Tensor] = {}
    for key, values in found.directions.items():
        index = (key + count if key < 0 else key) + (1 if spec.numbering == "block" else 0)
        if index in rows or index < 0:
            raise spec.error(f"{found.source}: layer id {key} names a layer twice or none (the model has {blocks} blocks)")
        rows[index] = values.detach().float().reshape(-1)
    return rows


def _hidden_size(spec: VectorFormat, source: str, rows: dict[int, torch.Tensor]) -> int:
    sizes = sorted({values.shape[0] for values in rows.values()})
    if len(sizes) > 1:
        raise spec.error(f"{source}: directions of different sizes {sizes}")
    return sizes[0]


def _check_model(spec: VectorFormat, found: Found, backbone: Backbone, rows: dict[int, torch.Tensor], hidden: int, depth: int | None) -> int:
    """The checks against the model; returns its depth. Errors for what cannot steer it, warnings for another model's vector."""
    source, convention, name, n_layers = found.source, found.convention, backbone.name, backbone.n_layers
    if hidden != backbone.hidden_size:
        raise spec.error(f"{source} has hidden size {hidden} but {name} has {backbone.hidden_size}: it was made for another model")
    if depth is not None and depth != n_layers:
        raise spec.error(f"{source} was made for a model of {depth} blocks, {name} has {n_layers}: it was made for another model")
    deepest = max(rows)
    if deepest > n_layers:
        raise spec.error(
            f"{source} steers our layer {deepest} ({spec.tool} index {spec.key(deepest)}) but {name} has layers 1..{n_layers}: "
            "it was made for a deeper model"
        )
    if convention is not None and convention.config:
        ours = model_config(backbone)
        if convention.fingerprint != config_fingerprint(ours):
            differences = ", ".join(f"{k} {convention.config.get(k)!r} vs {v!r}" for k, v in ours.items() if convention.config.get(k) != v)
            warnings.warn(f"{source} was made for {convention.model}, another model of the same shape ({differences})", stacklevel=3)
    elif found.model_hint and family(found.model_hint) != family(backbone.model_type):
        warnings.warn(f"{source} was made for a '{found.model_hint}' model, {name} is '{family(backbone.model_type)}'", stacklevel=3)
    return n_layers
