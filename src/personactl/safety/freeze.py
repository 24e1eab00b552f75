"""Masked weights kept bit-identical through a fine-tune, or zeroed for a prune check; always undone on exit.

Freezing has two halves. A gradient hook zeroes the masked entries' gradients,
so AdamW's moments for them stay zero; but AdamW's weight decay still shrinks
every weight, so after each optimiser step the masked entries are written back
from a copy. `FrozenWeights.verify` then checks bit-identity: frozen is an
invariant, not a hope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..models import Backbone
from .errors import FrozenWeightsChanged
from .masks import match_to_model
from .wanda import linear_layers


class FrozenWeights:
    """The masked weights of a model and their values when freezing began."""

    def __init__(self, backbone: Backbone, masks: Mapping[str, torch.Tensor]) -> None:
        layers = linear_layers(backbone)
        matched = match_to_model(backbone, masks)
        self.weights = {name: layers[name].weight for name in matched}
        # flat positions of the masked entries: hooks and write-backs then touch those entries only
        self.index = {name: m.to(self.weights[name].device, torch.bool).reshape(-1).nonzero().squeeze(1) for name, m in matched.items()}
        self.values = {name: self.weights[name].detach().reshape(-1)[idx].clone() for name, idx in self.index.items()}

    @property
    def count(self) -> int:
        return int(sum(len(idx) for idx in self.index.values()))

    @torch.no_grad()
    def restore(self) -> None:
        """Write the frozen values back into the masked entries."""
        for name, idx in self.index.items():
            self.weights[name].data.view(-1).index_copy_(0, idx, self.values[name])

    @torch.no_grad()
    def changed(self) -> int:
        """How many masked entries differ (bitwise) from their frozen values."""
        return int(sum(int((self.weights[n].detach().reshape(-1)[idx] != self.values[n]).sum()) for n, idx in self.index.items()))

    def verify(self) -> None:
        """Raise FrozenWeightsChanged unless every masked entry is bit-identical to its frozen value."""
        moved = self.changed()
        if moved:
            raise FrozenWeightsChanged(f"{moved} of {self.count} frozen weights changed during fine-tuning: the result is not a frozen fine-tune")


def _zero_grad_at(index: torch.Tensor) -> Callable[[torch.Tensor], None]:
    def hook(weight: torch.Tensor) -> None:
        assert weight.grad is not None  # a post-accumulate-grad hook runs once the gradient is there
        weight.grad.view(-1).index_fill_(0, index, 0.0)

    return hook


@contextmanager
def frozen(backbone: Backbone, masks: Mapping[str, torch.Tensor]) -> Iterator[FrozenWeights]:
    """Keep the masked weights fixed while any optimiser steps: gradient hooks plus a write-back after each step.

    The gradient hooks run after each accumulation into `.grad` and zero the
    masked entries in place. They are registered on the weights that require
    gradients now (a PEFT wrap later keeps the same tensors) and removed on
    exit, exceptions included.
    """
    state = FrozenWeights(backbone, masks)
    handles = [
        state.weights[name].register_post_accumulate_grad_hook(_zero_grad_at(idx))
        for name, idx in state.index.items()
        if state.weights[name].requires_grad
    ]
    handles.append(register_optimizer_step_post_hook(lambda *_: state.restore()))
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def zeroed(backbone: Backbone, masks: Mapping[str, torch.Tensor]) -> Iterator[int]:
    """The masked weights set to zero (pruned) inside the context, restored bit-exactly on exit; yields their count."""
    state = FrozenWeights(backbone, masks)
    with torch.no_grad():
        for name, idx in state.index.items():
            state.weights[name].data.view(-1).index_fill_(0, idx, 0.0)
    try:
        yield state.count
    finally:
        state.restore()
