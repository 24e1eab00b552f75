"""repeng's `ControlVector`: as its object, its pickle-free dict form, and its GGUF file.

repeng keys each direction by the 0-based index i of a block in `model.layers` (training accepts negative ids
and stores them counted from the front); its `ControlModel` wraps `model.layers[i]` and adds `coeff *
directions[i]` to that block's output, at every position but left padding. So key i is personactl layer
i+1, as for llama.cpp. `ControlVector.export_gguf` writes llama.cpp's layout with the transformers
`model_type` as model hint (llama.cpp's own tools write the GGUF architecture name: `family` makes them one).
repeng's training makes unit-length PCA directions, personactl's are mean differences: the numbers are
carried as they are, so one coefficient steers the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import Backbone
from ..vectors import PersonaVector
from .convention import Convention, PortableFormatError
from .llamacpp import read_gguf, write_gguf
from .vector_format import Found, VectorFormat, prepare_export

INSTALL = "pip install --no-deps repeng (it needs gguf, numpy, scikit-learn, torch, tqdm and transformers)"


def _write(scaled: PersonaVector, path: Path, convention: Convention) -> None:
    write_gguf(scaled, path, convention, convention.model_type or "llama")


def _read(source: Any) -> Found:
    if isinstance(source, (str, Path)):
        return read_gguf(source, llama_cpp_rules=False, error=PortableFormatError)
    fields = source if isinstance(source, dict) else getattr(source, "__dict__", {})
    if not {"model_type", "directions"} <= set(fields):
        raise PortableFormatError(f"a {type(source).__name__} is not a repeng ControlVector: it needs model_type and directions")
    directions = {int(key): torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(-1).copy()) for key, values in fields["directions"].items()}
    hint = str(fields["model_type"])
    return Found(directions, "repeng ControlVector", model_hint=hint, assumed=(f"made for this model (repeng names only its family, '{hint}')",))


FORMAT = VectorFormat(
    name="repeng",
    tool="repeng",
    summary="repeng ControlVector as its GGUF (llama.cpp's layout, HF model_type as hint; ControlVector.import_gguf reads it)",
    usage="cv = ControlVector.import_gguf('{path}'); ControlModel(model, list(cv.directions)).set_control(cv, 1.0)",
    suffix=".gguf",
    numbering="block",
    lowest_layer=1,
    lowest_reason="layer 0 is the embeddings, which repeng does not steer",
    write=_write,
    read=_read,
)


def to_repeng(
    vector: PersonaVector, *, layers: Sequence[int] | None = None, coef: float = 1.0, backbone: Backbone | None = None, model_hint: str | None = None
) -> Any:
    """`coef * vector` at `layers` as a repeng `ControlVector` (block keys: our layer l is key l-1), for
    `ControlModel(model, list(cv.directions)).set_control(cv, 1.0)`. Needs repeng installed."""
    try:
        from repeng import ControlVector  # noqa: PLC0415
    except (ImportError, AttributeError) as exc:  # repeng 0.4.0 names np.float_, which numpy 2 removed
        raise PortableFormatError(f"repeng cannot be imported ({str(exc).splitlines()[0][:120]}): {INSTALL}") from exc
    scaled, convention = prepare_export(FORMAT, vector, layers=layers, coef=coef, backbone=backbone, model_hint=model_hint)
    directions = {layer - 1: scaled.directions[layer].numpy().astype(np.float32) for layer in convention.layers}
    return ControlVector(model_type=convention.model_type or "llama", directions=directions)
