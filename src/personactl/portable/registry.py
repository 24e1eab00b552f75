"""The formats by name, and the two calls everything else uses: `export_vector` and `import_vector`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models import Backbone
from ..vectors import PersonaVector
from . import llamacpp, persona_vectors, plain, repeng, steering_vectors
from .convention import PortableFormatError
from .vector_format import Found, VectorFormat, finish_import, prepare_export, write_atomic

FORMATS: dict[str, VectorFormat] = {
    spec.name: spec for spec in (llamacpp.FORMAT, repeng.FORMAT, steering_vectors.FORMAT, persona_vectors.FORMAT, plain.FORMAT)
}


def vector_format(name: str) -> VectorFormat:
    """The format called `name`; an unknown name is a one-line error listing the known ones."""
    spec = FORMATS.get(name.strip().lower())
    if spec is None:
        raise PortableFormatError(f"unknown vector format '{name}': use one of {', '.join(FORMATS)}")
    return spec


def export_vector(
    vector: PersonaVector,
    path: str | Path,
    fmt: str,
    *,
    layers: Sequence[int] | None = None,
    coef: float = 1.0,
    backbone: Backbone | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write `coef * vector` at `layers` (personactl's numbering; default: every non-zero layer the format holds)
    in another tool's format `fmt` (see `FORMATS`), atomically, with the convention recorded in the file.

    With `backbone` the vector is checked against the model, and its name, type and config fingerprint are
    recorded; without, `model_hint` names the model type. Returns the path.
    """
    spec = vector_format(fmt)
    scaled, convention = prepare_export(spec, vector, layers=layers, coef=coef, backbone=backbone, model_hint=model_hint)
    return write_atomic(spec, scaled, path, convention)


def read_source(source: str | Path | Any, fmt: str) -> Found:
    """What a file (or a tool's object) in format `fmt` holds, unchecked: fails early, before a model is loaded."""
    return vector_format(fmt).read(source)


def import_vector(source: str | Path | Any, fmt: str, backbone: Backbone | None = None, *, trait: str | None = None) -> PersonaVector:
    """A persona vector from another tool's file or object (`fmt`: see `FORMATS`), in personactl's layer numbering.

    `source` is a path, or the tool's own object (a repeng `ControlVector` or its dict, a steering-vectors
    `SteeringVector` or its dict, a persona_vectors tensor). With `backbone`, the hidden size, the depth and
    any recorded config fingerprint or model hint are checked against it (a vector for another model of the
    same shape loads with a warning). `vector.extra["assumed"]` says in one line what the source left unsaid.
    """
    spec = vector_format(fmt)
    return finish_import(spec, spec.read(source), backbone, trait=trait)
