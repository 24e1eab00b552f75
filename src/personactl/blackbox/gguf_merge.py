"""A persona folded into a GGUF model: W + scale * dW for every adapted weight, written as a GGUF llama.cpp loads.

A LoRA adds per-token work in llama.cpp (two small products per adapted
weight); a persona at a fixed scale costs nothing once merged. The merged file
is the source GGUF with its metadata and every other tensor copied byte for
byte; each adapted weight is de-quantized (gguf's numpy codecs), the delta is
added in llama.cpp's row order (`gguf_lora.gguf_lora_tensors`: the same names,
q/k permutation and scaling as the LoRA export), and the sum is written in the
quantisation asked for: q8_0 (the default), f16, f32, or `source`, the
weight's own type (Q4_1 for SmolLM2). Re-quantizing snaps the sum back onto the
type's grid, and a persona delta is small next to a 4-bit step: on SmolLM2 the
Q4_1 file keeps a few percent of the pirate delta (the persona is gone) where
Q8_0 and F16 keep it. How much of the delta the written weights carry is
measured and returned, so the file never claims a persona it lost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from ..lora.direction import LoRADirection
from ..models import Backbone
from .gguf_lora import GGUFLoRAError, gguf_lora_tensors, load_lora_folder

WEIGHT_TYPES = ("q8_0", "f16", "f32", "source")
LOST = 0.5  # below this share of the delta kept, the summary says the persona is largely lost


@dataclass(frozen=True)
class MergedGGUF:
    """What `write_merged_gguf` wrote: the file, the weights it changed, their type and how exactly they carry the delta."""

    path: Path
    merged: int  # tensors changed
    weights: str  # e.g. "Q4_1 (re-quantized, as the source)"
    delta_kept: float  # <written - W, dW> / ||dW||^2 over the changed tensors (dW = scale * delta): 1 = all of it
    delta_error: float  # ||written - (W + dW)||_F / ||dW||_F over the changed tensors

    def summary(self) -> str:
        line = (
            f"{self.merged} weights merged into {self.path}, written as {self.weights}; the written change carries "
            f"{100 * self.delta_kept:.1f}% of the delta (projection), relative error {100 * self.delta_error:.1f}% (Frobenius)"
        )
        if self.delta_kept < LOST:
            line += ": re-quantizing lost most of the persona, merge with --weights q8_0 or f16"
        return line


def merged_deltas(direction: LoRADirection, backbone: Backbone, scale: float) -> tuple[str, dict[str, np.ndarray]]:
    """(llama.cpp architecture, {GGUF tensor name: scale * dW as numpy [out, in] in the GGUF's row order})."""
    arch, alpha, tensors = gguf_lora_tensors(direction, backbone)
    deltas = {}
    for name in (n.removesuffix(".lora_a") for n in tensors if n.endswith(".lora_a")):
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        factor = alpha / a.shape[0] if alpha else 1.0  # llama.cpp: alpha 0 applies the factors as they are
        deltas[name] = (scale * factor) * (b.astype(np.float64) @ a.astype(np.float64))
    return arch, deltas


def _target_type(weights: str, source: Any) -> Any:
    import gguf  # noqa: PLC0415

    if weights == "source":
        return source
    return gguf.GGMLQuantizationType[weights.upper()]


def _encode(values: np.ndarray, qtype: Any) -> np.ndarray:
    import gguf  # noqa: PLC0415

    if qtype == gguf.GGMLQuantizationType.F32:
        return values.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return values.astype(np.float16)
    try:
        return gguf.quants.quantize(values.astype(np.float32), qtype)
    except NotImplementedError as exc:
        raise GGUFLoRAError(f"the gguf package cannot write {qtype.name} weights: merge with --weights q8_0, f16 or f32") from exc


def _copy_fields(fields: dict[str, Any], writer: Any) -> None:
    """The source's key-value pairs, as gguf's gguf_new_metadata copies them (the architecture is the writer's own)."""
    import gguf  # noqa: PLC0415

    for name, field in fields.items():
        if name != gguf.Keys.General.ARCHITECTURE:
            kind = field.types[0]
            writer.add_key_value(name, field.contents(), kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)


def write_merged_gguf(
    source: LoRADirection | str | Path, path: str | Path, backbone: Backbone, model_gguf: str | Path, *, scale: float = 1.0, weights: str = "q8_0"
) -> MergedGGUF:
    """Write `model_gguf` with scale * dW of `source` (LoRA direction / adapter, object or folder) merged in; atomic."""
    import gguf  # noqa: PLC0415

    if weights not in WEIGHT_TYPES:
        raise GGUFLoRAError(f"unknown --weights '{weights}': use {', '.join(WEIGHT_TYPES)}")
    direction = source if isinstance(source, LoRADirection) else load_lora_folder(source)
    arch, deltas = merged_deltas(direction, backbone, scale)
    reader = gguf.GGUFReader(str(model_gguf))
    fields = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    kind = fields["general.type"].contents() if "general.type" in fields else "model"
    if fields["general.architecture"].contents() != arch or kind != "model":
        raise GGUFLoRAError(f"{model_gguf} is not a '{arch}' model GGUF (the architecture of {backbone.name})")
    missing = sorted(set(deltas) - {t.name for t in reader.tensors})
    if missing:
        raise GGUFLoRAError(f"{model_gguf} has no tensor {missing[0]}: give the GGUF of {backbone.name}")
    kept = error = norm = 0.0
    types = set()
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        _copy_fields(fields, writer)
        for tensor in reader.tensors:
            if tensor.name not in deltas:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
                continue
            base, delta = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float64), deltas[tensor.name]
            qtype = _target_type(weights, tensor.tensor_type)
            data = _encode(base + delta, qtype)
            change = gguf.quants.dequantize(data, qtype) - base
            kept += float((change * delta).sum())
            error += float(((change - delta) ** 2).sum())
            norm += float((delta**2).sum())
            types.add(qtype.name)
            writer.add_tensor(tensor.name, data, raw_dtype=qtype)
        how = "re-quantized, as the source" if weights == "source" else "the other weights as in the source"
        result = MergedGGUF(
            path, len(deltas), f"{', '.join(sorted(types))} ({how})", kept / norm if norm > 0 else 1.0, (error / norm) ** 0.5 if norm > 0 else 0.0
        )
        record = {"persona": direction.metadata, "scale": scale, "source": Path(model_gguf).name, **asdict(result), "path": path.name}
        writer.add_string("personactl.merged", json.dumps(record, default=str)[:65000])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return result
