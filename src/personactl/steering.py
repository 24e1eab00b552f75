"""steer(): add (or ablate) persona directions in the residual stream.

Steering at layer l changes the output of decoder block l-1, h' = h + coef * v[l],
so it is what `hidden_states[l]` shows. Hooks live only inside the context
manager and are removed on exit, exceptions included.

Positions are counted per sequence: a forward call with more than one token
starts a new sequence (a prompt, or a whole text); single-token calls that
follow are generated tokens. `prompt` touches the prompt's positions only,
`response` only positions at or after `prompt_length` (by default: the
generated tokens), `all` every position.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence, Union

import torch

from .errors import IncompatibleVectorError, SteeringError
from .models import Backbone
from .vectors import PersonaVector

StepPositions = Literal["all", "prompt", "response"]
Op = Literal["add", "ablate"]
Coefficient = Union[float, Sequence[float], torch.Tensor]


@dataclass(frozen=True)
class SteeringTerm:
    """One direction applied at one or more layers.

    `coef` is a number, or one number per batch row (a sweep in one batch).
    `op="ablate"` removes `coef` times the projection on the direction
    (coef 1 = project it out). `norm_preserving` rescales each steered hidden
    state back to its unsteered norm.
    """

    vector: PersonaVector | torch.Tensor
    layers: int | Sequence[int]
    coef: Coefficient = 1.0
    positions: StepPositions = "all"
    op: Op = "add"
    norm_preserving: bool = False

    def layer_list(self) -> list[int]:
        return [self.layers] if isinstance(self.layers, int) else list(self.layers)

    def direction(self, layer: int, backbone: Backbone) -> torch.Tensor:
        """The vector to apply at `layer`, checked against the backbone."""
        if isinstance(self.vector, PersonaVector):
            self.vector.check_compatible(backbone)
            return self.vector.directions[layer]
        tensor = self.vector
        if tensor.shape[-1] != backbone.hidden_size:
            raise IncompatibleVectorError(
                f"steering vector has hidden size {tensor.shape[-1]} but {backbone.name} has {backbone.hidden_size}"
            )
        if tensor.dim() == 1:
            return tensor
        if tensor.shape[0] != backbone.n_layers + 1:
            raise IncompatibleVectorError(
                f"steering tensor has {tensor.shape[0]} layers but {backbone.name} needs {backbone.n_layers + 1}"
            )
        return tensor[layer]

    def with_rows(self, rows: slice) -> "SteeringTerm":
        """The same term for a slice of the batch (per-row coefficients sliced)."""
        if isinstance(self.coef, (int, float)):
            return self
        return SteeringTerm(
            self.vector, self.layers, torch.as_tensor(self.coef)[rows], self.positions, self.op, self.norm_preserving
        )


@dataclass
class _Prepared:
    """A term ready for the hot path: vector and coefficients on the right device."""

    vector: torch.Tensor  # [hidden]
    coef: torch.Tensor  # [] or [batch, 1, 1]
    positions: StepPositions
    op: Op
    norm_preserving: bool

    def apply(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.coef.dim() and self.coef.shape[0] != hidden.shape[0]:
            raise SteeringError(
                f"{self.coef.shape[0]} per-row coefficients for a batch of {hidden.shape[0]}: give one per row"
            )
        if self.op == "add":
            delta = self.coef * self.vector
        else:
            unit = self.vector / self.vector.norm()
            delta = -self.coef * (hidden @ unit)[..., None] * unit
        steered = hidden + (delta if mask is None else delta * mask)
        if self.norm_preserving:
            ratio = hidden.norm(dim=-1, keepdim=True) / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            steered = steered * ratio
        return steered


class _LayerHook:
    """Forward hook of one block: tracks positions and applies its terms."""

    def __init__(self, terms: list[_Prepared], prompt_length: int | None) -> None:
        self.terms = terms
        self.explicit_prompt_length = prompt_length
        self.prompt_length = prompt_length or 0
        self.offset = 0

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        seq = hidden.shape[1]
        if seq > 1 or self.offset == 0:  # a new sequence starts
            self.offset = 0
            self.prompt_length = self.explicit_prompt_length or seq
        for term in self.terms:
            selected = self._selection(term.positions, seq, hidden)
            if selected is not False:
                hidden = term.apply(hidden, selected if isinstance(selected, torch.Tensor) else None)
        self.offset += seq
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

    def _selection(self, positions: StepPositions, seq: int, hidden: torch.Tensor) -> bool | torch.Tensor:
        """True (every position), False (none) or a [1, seq, 1] mask."""
        if positions == "all":
            return True
        first, end = self.offset, self.offset + seq
        if positions == "prompt":
            if end <= self.prompt_length:
                return True
            if first >= self.prompt_length:
                return False
        else:
            if first >= self.prompt_length:
                return True
            if end <= self.prompt_length:
                return False
        index = torch.arange(first, end, device=hidden.device)
        in_prompt = index < self.prompt_length
        chosen = in_prompt if positions == "prompt" else ~in_prompt
        return chosen.to(hidden.dtype)[None, :, None]


@contextmanager
def steer(backbone: Backbone, *terms: SteeringTerm, prompt_length: int | None = None) -> Iterator[None]:
    """Apply `terms` to every forward pass of `backbone` inside the block."""
    by_layer: dict[int, list[_Prepared]] = {}
    for term in terms:
        for layer in term.layer_list():
            backbone.check_layer(layer, allow_embedding=False)
            if term.positions not in ("all", "prompt", "response"):
                raise SteeringError(f"unknown positions '{term.positions}': use all, prompt or response")
            if term.op not in ("add", "ablate"):
                raise SteeringError(f"unknown op '{term.op}': use add or ablate")
            vector = term.direction(layer, backbone).to(backbone.device, backbone.dtype)
            if term.op == "ablate" and float(vector.norm()) == 0.0:
                raise SteeringError(f"cannot ablate a zero vector at layer {layer}")
            coef = torch.as_tensor(term.coef, dtype=backbone.dtype, device=backbone.device)
            if coef.dim() > 1:
                raise SteeringError("coefficients must be a number or a flat list, one per batch row")
            coef = coef.reshape(-1, 1, 1) if coef.dim() == 1 else coef
            by_layer.setdefault(layer, []).append(_Prepared(vector, coef, term.positions, term.op, term.norm_preserving))
    handles = []
    try:
        for layer, prepared in by_layer.items():
            # prepend: run before transformers' own output-capturing hooks, so hidden_states show the steering
            handles.append(backbone.block(layer).register_forward_hook(_LayerHook(prepared, prompt_length), prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
