"""llama.cpp control vectors applied to a running llama-cpp-python model.

The file format (read and write, `direction.N` = block N = our layer N+1) lives in
`personactl.portable.llamacpp`; this module hands a vector to llama.cpp's C API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..portable.llamacpp import ControlVectorError, read_control_vector
from ..vectors import PersonaVector


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
