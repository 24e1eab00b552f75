"""The persona_vectors repository's `.pt` files: one tensor [n_layers + 1, hidden].

`generate_vec.py` stacks the mean differences of `hidden_states[l]` for l = 0..n_layers (row 0 the
embeddings) and `torch.save`s the tensor; its steering (`ActivationSteerer(model, vec[layer],
layer_idx=layer - 1)`) adds row `layer` to the output of block layer-1. Row l is personactl layer l, and the
tensor is personactl's own `directions`. (There, layer 0 would hook `layer_idx=-1`, the last block.)
A bare tensor holds no metadata, so personactl writes the convention beside it as FILE.json; persona_vectors
reads the `.pt` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..vectors import PersonaVector
from .convention import Convention, PortableFormatError
from .torch_files import load_plain
from .vector_format import Found, VectorFormat, sidecar_path


def _write(scaled: PersonaVector, path: Path, convention: Convention) -> None:
    torch.save(scaled.directions.clone(), path)


def _found(tensor: Any, source: str, record: str | None) -> Found:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise PortableFormatError(f"{source} holds {shape}, not the [n_layers + 1, hidden] tensor persona_vectors saves")
    convention = Convention.from_json(record, source) if record else None
    return Found(
        dict(enumerate(tensor.float())), source, convention, depth=tensor.shape[0] - 1, assumed=("made for this model (the file names none)",)
    )


def _read(source: Any) -> Found:
    if isinstance(source, (str, Path)):
        sidecar = sidecar_path(source)
        record = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
        return _found(load_plain(source, PortableFormatError, "save the tensor alone"), str(source), record)
    return _found(source, "persona_vectors tensor", None)


FORMAT = VectorFormat(
    name="persona-vectors",
    tool="persona_vectors",
    summary="persona_vectors .pt: one tensor [n_layers + 1, hidden], row l = hidden_states[l] = our layer l (convention in FILE.json)",
    usage="python -m eval.eval_persona ... --vector_path {path} --layer L (row L is added to the output of model.layers[L-1])",
    suffix=".pt",
    numbering="hidden_states",
    lowest_layer=0,
    lowest_reason="",
    write=_write,
    read=_read,
    sidecar=True,
)
