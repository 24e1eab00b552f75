"""steering-vectors' `SteeringVector`: as its object, and as a `.pt` file of its fields.

A `SteeringVector(layer_activations, layer_type)` keys each direction by the 0-based index N of a matching
module; with `layer_type="decoder_block"` (its default) the modules are the decoder blocks, `model.layers[N]`
for Llama-like models, and `apply(model, multiplier=c)` adds `c * layer_activations[N]` to block N's output
(a forward hook, every position by default). So key N is personactl layer N+1. Other layer types (mlp,
self_attn, the layer norms) hook inside a block, not the residual stream: they are refused.

The library has no file format; personactl writes `torch.save({"layer_activations": {N: tensor},
"layer_type": "decoder_block", "personactl.convention_json": "..."})`, which loads with
`torch.load(path, weights_only=True)` and becomes `SteeringVector(d["layer_activations"], d["layer_type"])`.
A file holding the `layer_activations` dict alone is read too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..models import Backbone
from ..vectors import PersonaVector
from .convention import RECORD_KEY, Convention, PortableFormatError
from .torch_files import load_plain
from .vector_format import Found, VectorFormat, prepare_export

LAYER_TYPE = "decoder_block"
INSTALL = "pip install --no-deps steering-vectors (it needs torch, transformers, tqdm and scikit-learn)"
_SAVE_INSTEAD = "save torch.save({'layer_activations': sv.layer_activations, 'layer_type': sv.layer_type}, path) instead of the object"


def _fields(scaled: PersonaVector, convention: Convention) -> dict[str, Any]:
    return {
        "layer_activations": {layer - 1: scaled.directions[layer].clone() for layer in convention.layers},
        "layer_type": LAYER_TYPE,
    }


def _write(scaled: PersonaVector, path: Path, convention: Convention) -> None:
    torch.save({**_fields(scaled, convention), RECORD_KEY: convention.to_json()}, path)


def _found(activations: Any, layer_type: Any, source: str, record: str | None) -> Found:
    if layer_type != LAYER_TYPE:
        raise PortableFormatError(
            f"{source}: layer_type '{layer_type}' hooks inside a block, not the residual stream: personactl imports '{LAYER_TYPE}' vectors only"
        )
    if not isinstance(activations, dict) or not all(isinstance(k, int) and isinstance(v, torch.Tensor) for k, v in activations.items()):
        raise PortableFormatError(f"{source}: layer_activations is not a dict of layer index -> tensor")
    convention = Convention.from_json(record, source) if record else None
    return Found(dict(activations), source, convention, assumed=("made for this model (steering-vectors records none)",))


def _from_dict(data: dict, source: str) -> Found:
    if "layer_activations" in data:
        return _found(data["layer_activations"], data.get("layer_type", LAYER_TYPE), source, data.get(RECORD_KEY))
    if data and all(isinstance(k, int) for k in data):
        return _found(data, LAYER_TYPE, source, None)
    raise PortableFormatError(f"{source}: a dict without layer_activations is not a steering-vectors vector")


def _read(source: Any) -> Found:
    if isinstance(source, (str, Path)):
        data = load_plain(source, PortableFormatError, _SAVE_INSTEAD)
        if not isinstance(data, dict):
            raise PortableFormatError(f"{source} holds a {type(data).__name__}, not a steering-vectors dict (layer_activations, layer_type)")
        return _from_dict(data, str(source))
    if isinstance(source, dict):
        return _from_dict(source, "steering-vectors dict")
    if hasattr(source, "layer_activations"):
        return _found(source.layer_activations, getattr(source, "layer_type", LAYER_TYPE), "steering-vectors SteeringVector", None)
    raise PortableFormatError(f"a {type(source).__name__} is not a steering-vectors SteeringVector")


FORMAT = VectorFormat(
    name="steering-vectors",
    tool="steering-vectors",
    summary="steering-vectors SteeringVector fields as a .pt dict (layer_activations N = block N = our layer N+1, decoder_block)",
    usage="d = torch.load('{path}'); with SteeringVector(d['layer_activations'], d['layer_type']).apply(model): ...",
    suffix=".pt",
    numbering="block",
    lowest_layer=1,
    lowest_reason="layer 0 is the embeddings, which a decoder_block vector does not reach",
    write=_write,
    read=_read,
)


def to_steering_vector(vector: PersonaVector, *, layers: Sequence[int] | None = None, coef: float = 1.0, backbone: Backbone | None = None) -> Any:
    """`coef * vector` at `layers` as a steering-vectors `SteeringVector` (decoder_block; our layer l is key l-1),
    for `with sv.apply(model): ...`. Needs steering-vectors installed."""
    try:
        from steering_vectors import SteeringVector  # noqa: PLC0415
    except ImportError as exc:
        raise PortableFormatError(f"steering-vectors is not installed: {INSTALL}") from exc
    scaled, convention = prepare_export(FORMAT, vector, layers=layers, coef=coef, backbone=backbone)
    return SteeringVector(**_fields(scaled, convention))
