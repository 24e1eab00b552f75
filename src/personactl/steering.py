"""steer(): add, ablate or cap persona directions in the residual stream.

Steering at layer l changes the output of decoder block l-1, h' = h + coef * v[l],
so it is what `hidden_states[l]` shows. Capping clamps the projection h . u on the
unit direction u to a range and moves h only along u (see `capping`). Hooks live only inside the context
manager and are removed on exit, exceptions included.

Positions are counted per sequence: a forward call with more than one token
starts a new sequence (a prompt, or a whole text); single-token calls that
follow are generated tokens. `all` touches every position. `response` is
persona_vectors' semantics: the last prompt token (whose output is the first
answer token) and every position after it, i.e. positions >= prompt_length - 1.
`prompt` is the rest: positions < prompt_length - 1. By default the prompt is
the first multi-token call of the sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from .errors import IncompatibleVectorError, SteeringError
from .models import Backbone
from .vectors import PersonaVector

StepPositions = Literal["all", "prompt", "response"]
Op = Literal["add", "ablate", "cap"]
Comparison = Literal["greater", "less"]  # a Condition fires above (greater) or below (less) its threshold
OPS = ("add", "ablate", "cap")
Coefficient = float | Sequence[float] | torch.Tensor
Bounds = tuple[float | None, float | None]  # [low, high] of h . u; None = open on that side


@dataclass(frozen=True)
class SteeringTerm:
    """One direction applied at one or more layers.

    `coef` is a number, or one number per batch row (a sweep in one batch).
    `op="ablate"` removes `coef` times the projection on the direction
    (coef 1 = project it out). `op="cap"` moves each state along the unit
    direction into `bounds[layer]` (coef 1 = all the way, 0 = not at all) and
    leaves states already inside untouched; `capping.cap_term` builds one from
    the vector's stored projections. `norm_preserving` rescales each steered
    hidden state back to its unsteered norm.
    """

    vector: PersonaVector | torch.Tensor
    layers: int | Sequence[int]
    coef: Coefficient = 1.0
    positions: StepPositions = "all"
    op: Op = "add"
    norm_preserving: bool = False
    bounds: Mapping[int, Bounds] | None = None  # op="cap": the range of h . u per layer

    def layer_list(self) -> list[int]:
        return [self.layers] if isinstance(self.layers, int) else list(self.layers)

    def direction(self, layer: int, backbone: Backbone) -> torch.Tensor:
        """The vector to apply at `layer`, checked against the backbone."""
        if isinstance(self.vector, PersonaVector):
            self.vector.check_compatible(backbone)
            return self.vector.directions[layer]
        tensor = self.vector
        if tensor.shape[-1] != backbone.hidden_size:
            raise IncompatibleVectorError(f"steering vector has hidden size {tensor.shape[-1]} but {backbone.name} has {backbone.hidden_size}")
        if tensor.dim() == 1:
            return tensor
        if tensor.shape[0] != backbone.n_layers + 1:
            raise IncompatibleVectorError(f"steering tensor has {tensor.shape[0]} layers but {backbone.name} needs {backbone.n_layers + 1}")
        return tensor[layer]

    def with_rows(self, rows: slice) -> SteeringTerm:
        """The same term for a slice of the batch (per-row coefficients sliced)."""
        if isinstance(self.coef, (int, float)):
            return self
        return replace(self, coef=torch.as_tensor(self.coef)[rows])


@dataclass
class _Prepared:
    """A term ready for the hot path: vector and coefficients on the right device."""

    vector: torch.Tensor  # [hidden]
    coef: torch.Tensor  # [] or [batch, 1, 1]
    positions: StepPositions
    op: Op
    norm_preserving: bool
    bounds: Bounds = (None, None)

    def apply(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.coef.dim() and self.coef.shape[0] != hidden.shape[0]:
            raise SteeringError(f"{self.coef.shape[0]} per-row coefficients for a batch of {hidden.shape[0]}: give one per row")
        if self.op == "add":
            delta = self.coef * self.vector
        else:
            unit = self.vector / self.vector.norm()
            along = hidden @ unit
            target = along.clamp(*self.bounds) if self.op == "cap" else torch.zeros_like(along)
            delta = self.coef * (target - along)[..., None] * unit
        steered = hidden + (delta if mask is None else delta * mask)
        if self.norm_preserving:
            ratio = hidden.norm(dim=-1, keepdim=True) / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            steered = steered * ratio
        return steered


class _LayerHook:
    """Forward hook of one block: tracks positions and applies its terms."""

    def __init__(self, terms: list[_Prepared], prompt_length: int | None, gate: ConditionGate | None = None) -> None:
        self.terms = terms
        self.explicit_prompt_length = prompt_length
        self.prompt_length = prompt_length or 0
        self.offset = 0
        self.gate = gate

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        seq = hidden.shape[1]
        if seq > 1 or self.offset == 0:  # a new sequence starts
            self.offset = 0
            self.prompt_length = self.explicit_prompt_length or seq
        unsteered = hidden
        # None: not decided yet (prefill before the condition layer)
        rows: Literal[True] | torch.Tensor | None = True if self.gate is None else self.gate.rows()
        if rows is not None and (rows is True or bool(rows.any())):
            for term in self.terms:
                selected = self._selection(term.positions, seq, hidden)
                if selected is not False:
                    hidden = term.apply(hidden, selected if isinstance(selected, torch.Tensor) else None)
            if rows is not True:
                hidden = torch.where(rows, hidden, unsteered)  # rows the condition did not fire on stay exactly unsteered
        self.offset += seq
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

    def _selection(self, positions: StepPositions, seq: int, hidden: torch.Tensor) -> bool | torch.Tensor:
        """True (every position), False (none) or a [1, seq, 1] mask."""
        if positions == "all":
            return True
        first, end, boundary = self.offset, self.offset + seq, self.prompt_length - 1
        if positions == "prompt":
            if end <= boundary:
                return True
            if first >= boundary:
                return False
        else:
            if first >= boundary:
                return True
            if end <= boundary:
                return False
        index = torch.arange(first, end, device=hidden.device)
        in_prompt = index < boundary
        chosen = in_prompt if positions == "prompt" else ~in_prompt
        return chosen.to(hidden.dtype)[None, :, None]


@dataclass(frozen=True)
class Condition:
    """Steer a row only if its prompt's projection on `vector` at `layer` passes `threshold` (as CAST does).

    A prompt's score is the mean, over its non-padding tokens but the first
    `skip_prefix` (see `prompt_mean`), of `hidden_states[layer]` (read before any
    steering at that layer) projected on the unit direction of `vector` at `layer`.
    `skip_prefix` is the chat template's part before the user's message, the same
    for every prompt (`conditions.template_prefix`; 1, the first token, at least).
    With `comparison="greater"` the condition fires when score > threshold, with
    `"less"` when score < threshold.
    `personactl condition find` (`conditions.find_condition`) fits both from two
    sets of prompts.
    """

    vector: PersonaVector | torch.Tensor
    layer: int
    threshold: float
    comparison: Comparison = "greater"
    skip_prefix: int = 1  # leading real tokens of each prompt left out of its score (the shared template prefix)

    def unit(self, backbone: Backbone) -> torch.Tensor:
        """The unit direction at `layer`, checked against the backbone (float32, on its device)."""
        layer = backbone.check_layer(self.layer, allow_embedding=False)
        if layer == backbone.n_layers:
            raise SteeringError(f"condition layer {layer} is the last one, which HF reports after the final norm: use 1..{layer - 1}")
        if self.comparison not in ("greater", "less"):
            raise SteeringError(f"unknown comparison '{self.comparison}': use greater or less")
        direction = SteeringTerm(self.vector, layer).direction(layer, backbone).float()
        norm = float(direction.norm())
        if norm == 0.0 or norm != norm:
            raise SteeringError(f"the condition vector is zero at layer {layer}: pick a layer it was extracted at")
        return (direction / norm).to(backbone.device)

    def fires(self, scores: torch.Tensor) -> torch.Tensor:
        """Which scores pass the threshold (bool, same shape)."""
        return scores > self.threshold if self.comparison == "greater" else scores < self.threshold


def prompt_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, skip: int = 1) -> torch.Tensor:
    """A condition's view of each prompt: the mean of hidden [batch, seq, hidden] over its real tokens but the first `skip`.

    The first tokens of chat-formatted prompts are the template's (SmolLM2's default system prompt is 24 tokens):
    their states are the same for every prompt (a causal model has seen nothing else), and the first is in most
    models a huge attention sink, so counting them only adds an offset whose weight depends on the prompt's
    length. `skip=1` leaves out the first token only. A prompt no longer than `skip` keeps its last token. The mask
    is [batch, seq] (1 = real, padding on either side); without one every position is real.
    """
    hidden = hidden.float()
    mask = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask.to(hidden.device).float()
    first = mask.argmax(1)  # index of each row's first real token
    position = torch.arange(mask.shape[1], device=mask.device)[None, :] - first[:, None]  # within the real tokens
    weights = mask * (position >= max(int(skip), 0)).float()
    last = torch.zeros_like(mask)
    last[torch.arange(len(mask), device=mask.device), (mask * (position + 1)).argmax(1)] = 1.0  # each row's last real token
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, mask * last)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)


class ConditionGate:
    """The per-row decision of a condition, taken at each prefill and read by the steering hooks.

    `scores` [batch] and `fired` [batch] (bool) belong to the last prompt that
    went through the model (None before the first one). A new sequence (a
    forward of more than one token, or the first forward) makes the decision
    pending until the condition layer has run; conditional steering is off
    while it is pending.
    """

    def __init__(self, condition: Condition, unit: torch.Tensor) -> None:
        self.condition = condition
        self.unit = unit
        self.scores: torch.Tensor | None = None
        self.fired: torch.Tensor | None = None
        self._pending = True
        self._mask: torch.Tensor | None = None

    def rows(self) -> torch.Tensor | None:
        """[batch, 1, 1] bool of the rows to steer, or None while the decision is pending."""
        return None if self._pending or self.fired is None else self.fired.to(self.unit.device)[:, None, None]

    def on_model_input(self, module: torch.nn.Module, args: Any, kwargs: dict) -> None:
        """Pre-hook of the base model: keep the 2-D attention mask of this forward (padding is not scored)."""
        mask = kwargs.get("attention_mask")
        self._mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def on_first_block(self, module: torch.nn.Module, args: Any, kwargs: dict) -> None:
        """Pre-hook of block 0: a forward of more than one token (or the first one) starts a new sequence."""
        hidden = args[0] if args else kwargs.get("hidden_states")
        if self.fired is None or (isinstance(hidden, torch.Tensor) and hidden.shape[1] > 1):
            self._pending = True

    def on_condition_layer(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """Forward hook of block layer-1 (run before any steering there): decide each row of a new sequence."""
        mask, self._mask = self._mask, None
        if not self._pending:
            return
        hidden = output[0] if isinstance(output, tuple) else output
        batch, seq = hidden.shape[:2]
        usable = mask[:, -seq:] if mask is not None and mask.shape[0] == batch and mask.shape[1] >= seq else None
        self.scores = (prompt_mean(hidden, usable, self.condition.skip_prefix) @ self.unit).cpu()
        self.fired = self.condition.fires(self.scores)
        self._pending = False


@contextmanager
def steer(
    backbone: Backbone, *terms: SteeringTerm, prompt_length: int | None = None, condition: Condition | None = None
) -> Iterator[ConditionGate | None]:
    """Apply `terms` to every forward pass of `backbone` inside the block.

    With a `condition`, each row is steered only if its prompt fires the
    condition; the block yields the `ConditionGate` whose `fired`/`scores` hold
    the last prompt's decisions (without one it yields None). The decision is
    taken at the condition layer of each prefill, so in the prefill itself only
    steered layers at or after the condition layer act; every generated token is
    steered at all the terms' layers in the rows that fired.
    """
    gate = ConditionGate(condition, condition.unit(backbone)) if condition is not None else None
    by_layer: dict[int, list[_Prepared]] = {}
    for term in terms:
        for layer in term.layer_list():
            backbone.check_layer(layer, allow_embedding=False)
            if term.positions not in ("all", "prompt", "response"):
                raise SteeringError(f"unknown positions '{term.positions}': use all, prompt or response")
            if term.op not in OPS:
                raise SteeringError(f"unknown op '{term.op}': use {', '.join(OPS)}")
            vector = term.direction(layer, backbone).to(backbone.device, backbone.dtype)
            if term.op != "add" and float(vector.norm()) == 0.0:
                raise SteeringError(f"cannot {term.op} along a zero vector at layer {layer}")
            coef = torch.as_tensor(term.coef, dtype=backbone.dtype, device=backbone.device)
            if coef.dim() > 1:
                raise SteeringError("coefficients must be a number or a flat list, one per batch row")
            coef = coef.reshape(-1, 1, 1) if coef.dim() == 1 else coef
            bounds = _cap_bounds(term, layer) if term.op == "cap" else (None, None)
            by_layer.setdefault(layer, []).append(_Prepared(vector, coef, term.positions, term.op, term.norm_preserving, bounds))
    handles = []
    try:
        for layer, prepared in by_layer.items():
            # prepend: run before transformers' own output-capturing hooks, so hidden_states show the steering
            hook = _LayerHook(prepared, prompt_length, gate)
            handles.append(backbone.block(layer).register_forward_hook(hook, prepend=True))
        if gate is not None:
            # registered last with prepend, so it reads the condition layer before the steering hooks there
            handles.append(backbone.block(gate.condition.layer).register_forward_hook(gate.on_condition_layer, prepend=True))
            handles.append(backbone.layers[0].register_forward_pre_hook(gate.on_first_block, with_kwargs=True))
            base = getattr(backbone.model, "base_model", backbone.model)
            handles.append(base.register_forward_pre_hook(gate.on_model_input, with_kwargs=True))
        yield gate
    finally:
        for handle in handles:
            handle.remove()


def _cap_bounds(term: SteeringTerm, layer: int) -> Bounds:
    """The checked [low, high] of a cap term at `layer`."""
    bounds = (term.bounds or {}).get(layer)
    if bounds is None:
        raise SteeringError(f"a cap term needs bounds at layer {layer}: build it with capping.cap_term or give bounds={{layer: (low, high)}}")
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise SteeringError(f"cap range at layer {layer} has low {low:g} above high {high:g}: give low <= high")
    return bounds


def weighted_terms(
    vector: PersonaVector | torch.Tensor,
    weights: dict[int, float],
    coef: Coefficient = 1.0,
    positions: StepPositions = "all",
    op: Op = "add",
    norm_preserving: bool = False,
) -> list[SteeringTerm]:
    """One term per layer with coefficient `coef * weights[layer]` (a number or per-row list, scaled alike):
    a multi-layer blend such as `auto:K` (see layer_selection.layer_weights for what the weights mean)."""
    scaled = (lambda w: coef * w) if isinstance(coef, (int, float)) else (lambda w: torch.as_tensor(coef, dtype=torch.float32) * w)
    return [SteeringTerm(vector, layer, scaled(w), positions, op, norm_preserving) for layer, w in weights.items()]
