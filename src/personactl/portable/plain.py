"""A plain safetensors layout any tool can read: one tensor per layer and the convention in the header.

- tensors: `layers.L`, float32, shape [hidden], one per written layer L, where L is the HF `hidden_states`
  index (the output of decoder block L-1; 0 = the embeddings), i.e. personactl's layer L;
- header (`__metadata__`): `format` = `personactl.layers/1` and `personactl.convention_json` = the convention
  (hook, numbering, operation, normalisation, coef, model, model config and its fingerprint, layers).

To apply it elsewhere: add `tensors[f"layers.{L}"]` to the output of `model.layers[L - 1]`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..vectors import PersonaVector
from .convention import RECORD_KEY, Convention, PortableFormatError
from .vector_format import Found, VectorFormat

LAYOUT = "personactl.layers/1"
_NAME = re.compile(r"^layers\.(\d+)$")


def _write(scaled: PersonaVector, path: Path, convention: Convention) -> None:
    tensors = {f"layers.{layer}": scaled.directions[layer].contiguous() for layer in convention.layers}
    save_file(tensors, str(path), metadata={"format": LAYOUT, RECORD_KEY: convention.to_json()})


def _read(source: Any) -> Found:
    if not isinstance(source, (str, Path)):
        raise PortableFormatError(f"the safetensors layout is a file, not a {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise PortableFormatError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PortableFormatError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from exc
    if "directions" in tensors and meta.get("format") == "personactl.persona_vector":
        raise PortableFormatError(f"{path} is personactl's own vector file (one 'directions' tensor): it needs no import, use it as it is")
    directions = {}
    for name, tensor in tensors.items():
        match = _NAME.match(name)
        if match is None or tensor.dim() != 1:
            raise PortableFormatError(f"{path}: tensor '{name}' {tuple(tensor.shape)} is not a layers.L tensor of shape [hidden] ({LAYOUT})")
        directions[int(match.group(1))] = tensor.float()
    record = meta.get(RECORD_KEY)
    return Found(
        directions, str(path), Convention.from_json(record, str(path)) if record else None, assumed=("made for this model (the file names none)",)
    )


FORMAT = VectorFormat(
    name="safetensors",
    tool="safetensors",
    summary=f"plain safetensors ({LAYOUT}): one tensor layers.L per layer, L = hidden_states[L] = our layer L; convention in the header",
    usage="add tensor layers.L of {path} to the output of model.layers[L-1]",
    suffix=".safetensors",
    numbering="hidden_states",
    lowest_layer=0,
    lowest_reason="",
    write=_write,
    read=_read,
)
