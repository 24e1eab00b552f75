"""Wanda importance scores, S_ij = |W_ij| * ||X_j||_2, for every linear layer of every block.

X_j is input feature j of that linear layer over the calibration tokens (the
answer tokens: the loss tokens of a fine-tune). The squared norms are summed by
forward pre-hooks in one batched pass without logits, so memory stays at one
layer's activations; the hooks live only inside `input_norms`'s context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..activations import make_batch, position_ids
from ..models import Backbone
from ..progress import progress_bar
from .errors import SafetyError


def linear_layers(backbone: Backbone) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder blocks, by its full module name in `backbone.model`."""
    inside = {id(m) for block in backbone.layers for m in block.modules()}
    found = {name: m for name, m in backbone.model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside}
    if not found:
        raise SafetyError(f"{backbone.name} has no nn.Linear layers in its blocks (e.g. GPT-2's Conv1D): Wanda scores need linear layers")
    return found


class _NormSums:
    """Sum of x_j^2 per input feature of each linear layer, over the tokens picked by `rows`."""

    def __init__(self, layers: dict[str, nn.Linear]) -> None:
        self.sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in layers.items()}
        self.rows: torch.Tensor | None = None  # flat indices of the tokens of the current batch that count
        self.tokens = 0

    def hook(self, name: str) -> Callable[[nn.Module, tuple], None]:
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])
            if self.rows is not None:
                x = x.index_select(0, self.rows.to(x.device))
            self.sums[name] += x.float().square().sum(0).to("cpu", torch.float64)

        return record


@contextmanager
def _recording(layers: dict[str, nn.Linear]) -> Iterator[_NormSums]:
    sums = _NormSums(layers)
    handles = [m.register_forward_pre_hook(sums.hook(name)) for name, m in layers.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def input_norms(
    backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16, what: str = "calibration"
) -> tuple[dict[str, torch.Tensor], int]:
    """||X_j||_2 per input feature of every block linear layer over the answer tokens, and the token count."""
    if not prompts or len(prompts) != len(answers):
        raise SafetyError(f"Wanda scores need calibration examples: got {len(prompts)} prompts and {len(answers)} answers")
    layers = linear_layers(backbone)
    inner = backbone.model.base_model  # the stack of blocks without the LM head: no logits
    with _recording(layers) as sums, progress_bar(f"Wanda norms ({what})", len(prompts)) as advance:
        for start in range(0, len(prompts), batch_size):
            batch = make_batch(backbone, prompts[start : start + batch_size], answers[start : start + batch_size])
            sums.rows = batch.response_mask.reshape(-1).nonzero()[:, 0]
            sums.tokens += len(sums.rows)
            inner(
                input_ids=batch.input_ids.to(backbone.device),
                attention_mask=batch.attention_mask.to(backbone.device),
                position_ids=position_ids(batch.attention_mask).to(backbone.device),
                use_cache=False,
            )
            advance(len(batch.input_ids))
    if sums.tokens == 0:
        raise SafetyError("the calibration answers have no tokens: Wanda scores need non-empty answers")
    return {name: s.sqrt().float() for name, s in sums.sums.items()}, sums.tokens


def scores_from_norms(backbone: Backbone, norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """S = |W| * ||X||_2 (broadcast over output rows), float32 on the CPU."""
    layers = linear_layers(backbone)
    return {name: layers[name].weight.detach().float().abs().cpu() * norm[None, :] for name, norm in norms.items()}


def wanda_scores(
    backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16, what: str = "calibration"
) -> dict[str, torch.Tensor]:
    """Wanda scores of every block linear layer's weights on these calibration examples."""
    norms, _ = input_norms(backbone, prompts, answers, batch_size=batch_size, what=what)
    return scores_from_norms(backbone, norms)
