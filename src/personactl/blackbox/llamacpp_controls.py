"""A persona vector as a llama.cpp control vector (`llama_set_adapter_cvec`): the request and the buffer llama.cpp reads.

llama.cpp adds a control vector to the output of block il, so our layer l (=
hidden_states[l], the output of block l-1) is block il = l-1, at offset
(il-1)*n_embd of the flat buffer (llama.cpp keeps no slot for block 0: layer 1
cannot be steered). The backend applies it to its context (`LlamaCppBackend.set_control`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..vectors import PersonaVector
from .llamacpp_files import LlamaCppError


def control_buffer(terms: Sequence[tuple[PersonaVector, Mapping[int, float], float]], n_layers: int, hidden: int) -> tuple[np.ndarray, int, int]:
    """The flat float32 buffer `llama_set_adapter_cvec` reads and its block range (il_start, il_end), inclusive.

    Each term is (vector, {our layer: weight}, coef) and adds coef * weight * v[l] at layer l;
    block il (1..n_layers-1) reads data[(il-1)*hidden : il*hidden], and block il is our layer il+1.
    """
    data = np.zeros((n_layers - 1, hidden), dtype=np.float32)
    blocks: list[int] = []
    for vector, weights, coef in terms:
        if vector.hidden_size != hidden or vector.n_layers != n_layers:
            raise LlamaCppError(
                f"vector '{vector.trait}' has {vector.n_layers} layers x {vector.hidden_size} but the GGUF model has "
                f"{n_layers} x {hidden}: it was made for another model"
            )
        for layer, weight in weights.items():
            if not 2 <= layer <= n_layers:
                raise LlamaCppError(
                    f"layer {layer} cannot be steered through llama.cpp: control vectors reach layers 2..{n_layers} "
                    "(layer l = output of block l-1; llama.cpp has no control slot for block 0)"
                )
            data[layer - 2] += float(coef) * float(weight) * vector.directions[layer].float().numpy()
            blocks.append(layer - 1)
    if not blocks:
        raise LlamaCppError("a control vector needs at least one layer")
    return np.ascontiguousarray(data.reshape(-1)), min(blocks), max(blocks)


@dataclass
class Control:
    """A control vector request: `vector` at `layers` ({layer: weight} or one layer), times `coef`."""

    vector: PersonaVector
    layers: int | Mapping[int, float]
    coef: float
    positions: str = "all"

    def weights(self) -> dict[int, float]:
        return {int(self.layers): 1.0} if isinstance(self.layers, int) else {int(k): float(v) for k, v in self.layers.items()}
