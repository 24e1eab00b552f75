"""llama.cpp control vectors: a PersonaVector as GGUF `direction.N` tensors, and back.

The file layout is llama.cpp's (also what repeng and llama.cpp's own
cvector-generator write): `general.architecture = "controlvector"`,
`controlvector.model_hint` (the model's llama.cpp architecture name),
`controlvector.layer_count` (the number of direction tensors) and one F32 1-D
tensor `direction.N` per steered block. llama.cpp adds `direction.N` to the
output of its 0-based block N (`build_cvec(cur, il)` at the end of each block),
so personactl layer l (= hidden_states[l], the output of block l-1) is written
as `direction.(l-1)`. llama.cpp refuses `direction.0` and steers blocks
1..n_layer-1 only: our layers 2..n_layers can be exported, layer 1 cannot.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from ..errors import PersonactlError
from ..models import Backbone
from ..vectors import PersonaVector

ARCH = "controlvector"
_DIRECTION = re.compile(r"^direction\.(\d+)$")

# HF model_type -> llama.cpp architecture name, where they differ (convert_hf_to_gguf.py's choices).
_LLAMA_CPP_ARCH = {"mistral": "llama", "gemma3_text": "gemma3", "gpt_neox": "gptneox", "phi3": "phi3"}


class ControlVectorError(PersonactlError):
    """A control vector that cannot be written or read for this model (layers, sizes, file kind)."""


def llama_cpp_arch(model_type: str) -> str:
    """The architecture name llama.cpp uses for a transformers `model_type` (e.g. llama, gemma3)."""
    import gguf  # noqa: PLC0415

    name = _LLAMA_CPP_ARCH.get(model_type, model_type)
    if name not in gguf.MODEL_ARCH_NAMES.values():
        raise ControlVectorError(f"llama.cpp has no architecture named '{name}' (model type '{model_type}')")
    return name


def exportable_layers(n_layers: int) -> range:
    """Our layers llama.cpp can steer: 2..n_layers (direction.1 .. direction.(n_layers-1))."""
    return range(2, n_layers + 1)


def parse_layers(text: str) -> list[int] | None:
    """'all' -> None (every non-zero exportable layer); '18-28' -> 18..28; '18,20,24-26' -> those layers."""
    text = text.strip().lower()
    if text in ("", "all"):
        return None
    layers: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            low, _, high = part.partition("-")
            layers.extend(range(int(low), int(high or low) + 1))
    except ValueError as exc:
        raise ControlVectorError(f"--layers '{text}' is not 'all', a range such as 18-28 or a list such as 18,20,24-26") from exc
    return layers


def _check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    chosen = sorted(set(int(layer) for layer in layers))
    if not chosen:
        raise ControlVectorError("no layers to export: give --layers such as 18-28, or all")
    for layer in chosen:
        if layer in (0, 1):
            raise ControlVectorError(
                f"layer {layer} cannot be exported to llama.cpp: it steers blocks 1..{n_layers - 1} only "
                f"(direction.1 = our layer 2; our layer 1 would be direction.0, which llama.cpp refuses): "
                f"choose layers 2..{n_layers}"
            )
        if not 2 <= layer <= n_layers:
            raise ControlVectorError(f"layer {layer} is out of range: this vector has layers 2..{n_layers} to export")
    return chosen


def write_control_vector(
    vector: PersonaVector,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    coef: float = 1.0,
    backbone: Backbone | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write `coef * vector` at `layers` (our convention; default: every non-zero layer 2..n) as a llama.cpp control vector.

    With `backbone`, the vector is checked against it and the model hint is its
    llama.cpp architecture name; otherwise give `model_hint` (default "llama").
    The file is written atomically. Returns the path.
    """
    import gguf  # noqa: PLC0415

    if backbone is not None:
        vector.check_compatible(backbone)
        model_hint = llama_cpp_arch(backbone.model_type)
    n_layers = vector.n_layers
    if layers is None:
        layers = [layer for layer in exportable_layers(n_layers) if float(vector.directions[layer].norm()) > 0]
        if not layers:
            raise ControlVectorError(f"vector '{vector.trait}' is zero at every layer llama.cpp can steer (2..{n_layers})")
    chosen = _check_layers(layers, n_layers)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint or "llama")
        writer.add_uint32(f"{ARCH}.layer_count", len(chosen))
        writer.add_string("personactl.trait", vector.trait)
        writer.add_string("personactl.model", vector.model)
        writer.add_string("personactl.layers", json.dumps(chosen))
        writer.add_float32("personactl.coef", float(coef))
        writer.add_string("personactl.fingerprint", vector.fingerprint())
        writer.add_string("personactl.convention", "direction.N is added to the output of block N = personactl layer N+1")
        for layer in chosen:
            writer.add_tensor(f"direction.{layer - 1}", (float(coef) * vector.directions[layer]).numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_control_vector(path: str | Path, backbone: Backbone | None = None, *, trait: str | None = None) -> PersonaVector:
    """Read a llama.cpp / repeng control vector: `direction.N` becomes our layer N+1.

    With `backbone`, the hidden size and the layers are checked against it and the
    vector has its shape [n_layers+1, hidden]; without, it is as deep as its last direction.
    """
    import gguf  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise ControlVectorError(f"control vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError, struct.error) as exc:
        raise ControlVectorError(f"{path} is not a readable GGUF file ({str(exc).splitlines()[0][:160]})") from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ControlVectorError(
            f"{path} is not a control vector: its general.architecture is '{arch}', not '{ARCH}'"
            + (" (a model file?)" if _field(reader, "general.type") == "model" else "")
        )
    found: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None:
            raise ControlVectorError(f"{path}: tensor '{tensor.name}' is not a direction.N tensor (llama.cpp would refuse the file)")
        index = int(match.group(1))
        if index == 0:
            raise ControlVectorError(f"{path}: tensor direction.0 is invalid (llama.cpp refuses it: direction.N steers block N >= 1, our layer N+1)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise ControlVectorError(f"{path}: {tensor.name} is not a 1-D F32 tensor (llama.cpp needs exactly that)")
        found[index] = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    if not found:
        raise ControlVectorError(f"{path} holds no direction tensors")
    sizes = {v.shape[0] for v in found.values()}
    if len(sizes) > 1:
        raise ControlVectorError(f"{path}: direction tensors of different sizes {sorted(sizes)}")
    hidden = sizes.pop()
    hint = _field(reader, f"{ARCH}.model_hint")
    deepest = max(found)
    n_layers = deepest + 1
    name = backbone.name if backbone is not None else "unknown"
    if backbone is not None:
        if hidden != backbone.hidden_size:
            raise ControlVectorError(f"{path} has hidden size {hidden} but {backbone.name} has {backbone.hidden_size}: it was made for another model")
        if deepest > backbone.n_layers - 1:
            raise ControlVectorError(
                f"{path} steers block {deepest} (direction.{deepest}) but {backbone.name} has blocks 0..{backbone.n_layers - 1} "
                f"(llama.cpp steers 1..{backbone.n_layers - 1}): it was made for a deeper model"
            )
        n_layers = backbone.n_layers
        expected = llama_cpp_arch(backbone.model_type)
        if hint and hint != expected:
            warnings.warn(f"{path} was made for a '{hint}' model, {backbone.name} is '{expected}'", stacklevel=2)
    directions = torch.zeros(n_layers + 1, hidden)
    for index, values in found.items():
        directions[index + 1] = torch.from_numpy(values.copy())
    layers = sorted(index + 1 for index in found)
    extra = {"source": str(path), "source_format": "llama.cpp control vector", "model_hint": hint, "layers": layers}
    stored = _field(reader, "personactl.trait")
    return PersonaVector(directions, trait=trait or stored or path.stem, model=name, method="imported", extra=extra)


def control_vector_buffer(vector: PersonaVector, n_layers: int, scale: float = 1.0) -> np.ndarray:
    """The flat float32 buffer llama_set_adapter_cvec takes: block il (1..n_layers-1) at offset hidden*(il-1)."""
    if vector.n_layers != n_layers:
        raise ControlVectorError(f"vector covers {vector.n_layers} layers, the model has {n_layers}")
    rows = vector.directions[2 : n_layers + 1] * float(scale)  # our layer il+1 for block il
    return np.ascontiguousarray(rows.numpy().astype(np.float32).reshape(-1))


def set_control_vector(
    llm: Any, vector: PersonaVector | str | Path | None, scale: float = 1.0, layer_start: int = 1, layer_end: int | None = None
) -> None:
    """Apply a control vector to a llama_cpp.Llama (as `--control-vector-scaled FILE scale`); None clears it.

    `layer_start`/`layer_end` are llama.cpp block indices (inclusive, default all).
    Clear the Llama's KV cache (`llm.reset()`) before evaluating again: cached states
    were computed without it.
    """
    import ctypes  # noqa: PLC0415

    import llama_cpp  # noqa: PLC0415

    ctx = llm._ctx.ctx  # noqa: SLF001 - llama-cpp-python exposes no control-vector API on Llama
    n_layers = int(llama_cpp.llama_model_n_layer(llm.model))
    if vector is None:
        llama_cpp.llama_set_adapter_cvec(ctx, None, 0, llm.n_embd(), -1, -1)
        return
    if not isinstance(vector, PersonaVector):
        vector = read_control_vector(vector)
        if vector.n_layers < n_layers:  # a file needs only reach its deepest direction
            pad = torch.zeros(n_layers + 1, vector.hidden_size)
            pad[: vector.directions.shape[0]] = vector.directions
            vector = PersonaVector(pad, trait=vector.trait, extra=vector.extra)
    data = control_vector_buffer(vector, n_layers, scale)
    if vector.hidden_size != llm.n_embd():
        raise ControlVectorError(f"control vector has hidden size {vector.hidden_size}, the model {llm.n_embd()}")
    pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if llama_cpp.llama_set_adapter_cvec(ctx, pointer, data.size, vector.hidden_size, layer_start, layer_end or n_layers):
        raise ControlVectorError("llama.cpp refused the control vector")
