"""llama.cpp control vectors: a PersonaVector as GGUF `direction.N` tensors, and back.

The file layout is llama.cpp's (also what repeng and llama.cpp's own cvector-generator write):
`general.architecture = "controlvector"`, `controlvector.model_hint` (the model's llama.cpp architecture
name), `controlvector.layer_count` (the number of direction tensors) and one F32 1-D tensor `direction.N` per
steered block. llama.cpp adds `direction.N` to the output of its 0-based block N (`build_cvec(cur, il)` at the
end of each block), so personactl layer l (= hidden_states[l], the output of block l-1) is written as
`direction.(l-1)`. llama.cpp refuses `direction.0` and steers blocks 1..n_layer-1 only: our layers 2..n_layers
can be exported, layer 1 cannot. personactl adds its convention as one more string key, which llama.cpp and
repeng ignore.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import Backbone
from ..vectors import PersonaVector
from .convention import RECORD_KEY, Convention, PortableFormatError, family
from .vector_format import Found, VectorFormat, finish_import, prepare_export, write_atomic

ARCH = "controlvector"
_DIRECTION = re.compile(r"^direction\.(\d+)$")


class ControlVectorError(PortableFormatError):
    """A control vector that cannot be written or read for this model (layers, sizes, file kind)."""


def llama_cpp_arch(model_type: str) -> str:
    """The architecture name llama.cpp uses for a transformers `model_type` (e.g. llama, gemma3)."""
    import gguf  # noqa: PLC0415

    name = family(model_type)
    if name not in gguf.MODEL_ARCH_NAMES.values():
        raise ControlVectorError(f"llama.cpp has no architecture named '{name}' (model type '{model_type}')")
    return name


def write_gguf(scaled: PersonaVector, path: Path, convention: Convention, model_hint: str) -> None:
    """`direction.(l-1)` for each of the convention's layers l, as llama.cpp and repeng lay it out."""
    import gguf  # noqa: PLC0415

    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint)
    writer.add_uint32(f"{ARCH}.layer_count", len(convention.layers))
    writer.add_string(RECORD_KEY, convention.to_json())
    for layer in convention.layers:
        writer.add_tensor(f"direction.{layer - 1}", scaled.directions[layer].numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf(path: str | Path, *, llama_cpp_rules: bool, error: type[PortableFormatError]) -> Found:
    """The `direction.N` tensors of a control vector file, keyed by N. With `llama_cpp_rules`, what llama.cpp
    would refuse (direction.0, a tensor that is not 1-D F32) is refused here too; repeng reads those."""
    import gguf  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise error(f"control vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError, struct.error) as exc:
        raise error(f"{path} is not a readable GGUF file ({str(exc).splitlines()[0][:160]})") from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise error(
            f"{path} is not a control vector: its general.architecture is '{arch}', not '{ARCH}'"
            + (" (a model file?)" if _field(reader, "general.type") == "model" else "")
        )
    found: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None:
            raise error(f"{path}: tensor '{tensor.name}' is not a direction.N tensor (llama.cpp would refuse the file)")
        index = int(match.group(1))
        if llama_cpp_rules and index == 0:
            raise error(f"{path}: tensor direction.0 is invalid (llama.cpp refuses it: direction.N steers block N >= 1, our layer N+1)")
        if len(tensor.shape) != 1 or (llama_cpp_rules and tensor.tensor_type != gguf.GGMLQuantizationType.F32):
            raise error(f"{path}: {tensor.name} is not a 1-D F32 tensor (llama.cpp needs exactly that)")
        found[index] = torch.from_numpy(np.asarray(tensor.data, dtype=np.float32).reshape(-1).copy())
    record = _field(reader, RECORD_KEY)
    hint = _field(reader, f"{ARCH}.model_hint")
    convention = Convention.from_json(record, str(path)) if record else None
    made_for = f"made for this model (the file names only its family, '{hint}')" if hint else "made for this model (the file names none)"
    return Found(found, str(path), convention, model_hint=hint, assumed=(made_for,))


def _write(scaled: PersonaVector, path: Path, convention: Convention) -> None:
    write_gguf(scaled, path, convention, llama_cpp_arch(convention.model_type) if convention.model_type else "llama")


def _read(source: Any) -> Found:
    if not isinstance(source, (str, Path)):
        raise ControlVectorError(f"a llama.cpp control vector is a .gguf file, not a {type(source).__name__}")
    return read_gguf(source, llama_cpp_rules=True, error=ControlVectorError)


FORMAT = VectorFormat(
    name="llamacpp",
    tool="llama.cpp",
    summary="llama.cpp control vector (GGUF, direction.N = block N = our layer N+1), for --control-vector-scaled",
    usage="llama-cli -m MODEL.gguf --control-vector-scaled {path} 1.0",
    suffix=".gguf",
    numbering="block",
    lowest_layer=2,
    lowest_reason="llama.cpp steers blocks 1..n-1 only (direction.1 = our layer 2; our layer 1 would be direction.0, which llama.cpp refuses)",
    write=_write,
    read=_read,
    error=ControlVectorError,
)


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
    scaled, convention = prepare_export(FORMAT, vector, layers=layers, coef=coef, backbone=backbone, model_hint=model_hint)
    return write_atomic(FORMAT, scaled, path, convention)


def read_control_vector(path: str | Path, backbone: Backbone | None = None, *, trait: str | None = None) -> PersonaVector:
    """Read a llama.cpp / repeng control vector: `direction.N` becomes our layer N+1.

    With `backbone`, the hidden size and the layers are checked against it and the
    vector has its shape [n_layers+1, hidden]; without, it is as deep as its last direction.
    """
    return finish_import(FORMAT, _read(path), backbone, trait=trait)
