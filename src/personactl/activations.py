"""Hidden states of every layer from one batched forward pass, reduced per text.

The forward runs the backbone without its LM head (no logits over positions)
and returns HF's `hidden_states`: index 0 is the embedding output, index l the
output of block l-1 (for the last layer HF reports it after the final norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from .models import Backbone

Positions = Literal["response_avg", "prompt_avg", "prompt_last", "last", "all_avg"]
POSITIONS: tuple[Positions, ...] = get_args(Positions)


def checked_positions(name: str) -> Positions:
    """`name` as one of POSITIONS; ValueError naming them when it is none."""
    for choice in POSITIONS:
        if choice == name:
            return choice
    raise ValueError(f"unknown positions '{name}': use one of {', '.join(POSITIONS)}")


@dataclass(frozen=True)
class Batch:
    """Left-padded token ids with the prompt/response split of every row."""

    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq]
    prompt_mask: torch.Tensor  # [batch, seq] bool, prompt tokens
    response_mask: torch.Tensor  # [batch, seq] bool, response tokens

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that skip the left padding (absolute-position models need them)."""
        return position_ids(self.attention_mask)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2 ... from each row's first real token; padding gets 0."""
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


def make_batch(backbone: Backbone, prompts: Sequence[str], responses: Sequence[str] | None = None) -> Batch:
    """Tokenize prompt and response apart (so the split is exact) and left-pad."""
    responses = list(responses) if responses is not None else [""] * len(prompts)
    prompt_ids = backbone.encode(prompts)
    response_ids = backbone.encode(responses)
    ids, attention = left_pad([p + r for p, r in zip(prompt_ids, response_ids)], backbone.pad_id)
    width = ids.shape[1]
    prompt_mask = torch.zeros(ids.shape, dtype=torch.bool)
    response_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        start = width - len(p) - len(r)
        prompt_mask[i, start : start + len(p)] = True
        response_mask[i, start + len(p) :] = True
    return Batch(ids, attention, prompt_mask, response_mask)


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows as one left-padded [batch, width] tensor, and its attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[i, width - len(row) :] = 1
    return ids, attention


@torch.no_grad()
def hidden_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """All layers' hidden states, [n_layers+1, batch, seq, hidden], without logits."""
    device = backbone.device
    out = backbone.model.base_model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids(attention_mask).to(device),
        output_hidden_states=True,
        use_cache=False,
    )
    return torch.stack(out.hidden_states)


class _StopForward(Exception):
    """Raised by the capture hook once the wanted layer has run: the rest of the forward is not needed."""


@contextmanager
def _stop_after(block: torch.nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        store.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = block.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def layer_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """`hidden_states[layer]` alone, [batch, seq, hidden]: the forward stops after block layer-1.

    The last layer (after HF's final norm) and the embeddings take the full path."""
    backbone.check_layer(layer)
    if layer in (0, backbone.n_layers):
        return hidden_states(backbone, input_ids, attention_mask)[layer]
    store: list[torch.Tensor] = []
    device = backbone.device
    with _stop_after(backbone.block(layer), store):
        try:
            backbone.model.base_model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids(attention_mask).to(device),
                use_cache=False,
            )
        except _StopForward:
            pass
    return store[0]


@torch.no_grad()
def collect_layer(
    backbone: Backbone,
    prompts: Sequence[str],
    responses: Sequence[str],
    layer: int,
    *,
    positions: Positions = "response_avg",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Reduced activations at one layer for each (prompt, response), [n, hidden].

    Cheaper than `collect(...)[:, layer]` when only one layer is wanted: the
    forward stops after that layer's block (`layer_states`), and the texts are
    batched shortest first, so long and short ones do not share a padded batch."""
    checked_positions(positions)
    lengths = [len(ids) for ids in backbone.encode([p + r for p, r in zip(prompts, responses)])]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    reduced: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = make_batch(backbone, [prompts[i] for i in rows], [responses[i] for i in rows])
        states = layer_states(backbone, batch.input_ids, batch.attention_mask, layer)
        for i, row in zip(rows, reduce_positions(states[None], batch, positions)[:, 0]):
            reduced[i] = row
        if on_batch is not None:
            on_batch(len(rows))
    return torch.stack(reduced)


def reduce_positions(states: torch.Tensor, batch: Batch, positions: Positions) -> torch.Tensor:
    """Reduce [layers, batch, seq, hidden] to [batch, layers, hidden] by position rule."""
    if positions == "last":
        reduced = states[:, :, -1]
    elif positions == "prompt_last":
        last = batch.prompt_mask.long().cumsum(1).argmax(1)  # index of the last prompt token
        reduced = states[:, torch.arange(states.shape[1]), last]
    else:
        mask = {
            "response_avg": batch.response_mask,
            "prompt_avg": batch.prompt_mask,
            "all_avg": batch.attention_mask.bool(),
        }[positions]
        if positions == "response_avg" and not bool(mask.any(1).all()):
            raise ValueError("response_avg needs a non-empty response for every text")
        weights = mask.to(states.device, states.dtype)
        reduced = (states * weights[None, :, :, None]).sum(2) / weights.sum(1)[None, :, None]
    return reduced.transpose(0, 1).float().cpu()


def collect(
    backbone: Backbone,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    *,
    positions: Positions = "response_avg",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Reduced activations of every layer for each (prompt, response): [n, layers+1, hidden]."""
    checked_positions(positions)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        batch = make_batch(
            backbone,
            prompts[start : start + batch_size],
            None if responses is None else responses[start : start + batch_size],
        )
        states = hidden_states(backbone, batch.input_ids, batch.attention_mask)
        chunks.append(reduce_positions(states, batch, positions))
        if on_batch is not None:
            on_batch(len(batch.input_ids))
    return torch.cat(chunks)
