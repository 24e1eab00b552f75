"""Hidden states captured while generating: one pass instead of generate-then-collect.

`generate` already computes the hidden state of every prompt token (the prefill) and of every answer token it
feeds back (the decode steps). A `GenerationCapture` reads them there with hooks and keeps running per-row sums
only, so extraction, screening and the monitoring of generated answers need no second forward over prompt +
answer, and memory does not grow with the answers' length.

The reduction is `activations.reduce_positions`' over the tokens the model generated: index 0 is the embeddings
(block 0's input), index l the output of block l-1, the last index the base model's output (after the final norm,
as HF's `hidden_states` reports it). Each layer is read before any steering at that layer, as the server's meter
reads it. The last answer token is never fed back by `generate`; `generate` runs one more step for the rows that
did not end with an end-of-turn token so that its state is counted too. Special tokens, which the answer's text
leaves out, are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch

from .activations import Positions
from .models import Backbone

CAPTURED_POSITIONS: tuple[str, ...] = ("response_avg", "prompt_last", "prompt_avg")


def capture_for(backbone: Backbone, positions: str) -> GenerationCapture | None:
    """A capture for answers generated at `positions`, or None where the text must be read again in a second pass: a
    position generation cannot see, or a model without a chat template (its answers are cut at a stop string after
    generation, and the tokens past it must not count)."""
    if positions not in CAPTURED_POSITIONS or not getattr(backbone.tokenizer, "chat_template", None):
        return None
    return GenerationCapture(backbone, cast(Positions, positions))


class GenerationCapture:
    """Reduced activations [n, layers+1, hidden] of every row `generate` answers, in order (`result()`)."""

    def __init__(self, backbone: Backbone, positions: Positions = "response_avg") -> None:
        if positions not in CAPTURED_POSITIONS:
            raise ValueError(f"positions '{positions}' cannot be captured while generating: use one of {', '.join(CAPTURED_POSITIONS)}")
        self.backbone = backbone
        self.positions = positions
        self._rows: list[torch.Tensor] = []
        self.peak_bytes = 0  # the largest running sums held at once (one batch's)

    @property
    def needs_whole_prompt(self) -> bool:
        """Whether the prefill must see every prompt token (no shared prefill)."""
        return self.positions != "response_avg"

    def result(self) -> torch.Tensor:
        """[rows, layers+1, hidden] float32 on the CPU."""
        if not self._rows:
            return torch.empty(0, self.backbone.n_layers + 1, self.backbone.hidden_size)
        return torch.stack(self._rows)

    @contextmanager
    def batch(self, eos_ids: set[int]) -> Iterator[None]:
        """Capture one generate batch: every forward of the backbone inside the block adds to its rows' sums."""
        state = _BatchState(self.backbone, self.positions, eos_ids)
        with state.hooks():
            yield
        self.peak_bytes = max(self.peak_bytes, state.sums.numel() * state.sums.element_size() if state.sums is not None else 0)
        self._rows.extend(state.reduced())


class _BatchState:
    """Running sums [layers+1, batch, hidden] and token counts [batch] of one batch, fed by forward hooks."""

    def __init__(self, backbone: Backbone, positions: str, eos_ids: set[int]) -> None:
        self.backbone, self.positions = backbone, positions
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
        self.special = torch.tensor(sorted(set(backbone.tokenizer.all_special_ids)), dtype=torch.long)
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.ended: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # [batch, seq] of the forward now running

    def on_forward(self, module: torch.nn.Module, args: Any, kwargs: dict) -> None:
        """Base model pre-hook: which positions of this forward count, per row."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise RuntimeError("GenerationCapture needs input_ids in every forward (inputs_embeds are not supported)")
        batch, seq = ids.shape
        if self.sums is None:  # the prefill
            device = ids.device
            self.sums = torch.zeros(self.backbone.n_layers + 1, batch, self.backbone.hidden_size, device=device)
            self.counts = torch.zeros(batch, device=device)
            self.ended = torch.zeros(batch, dtype=torch.bool, device=device)
            self.weights = self._prefill_weights(kwargs.get("attention_mask"), batch, seq, device)
        else:
            assert self.ended is not None
            fed = ids[:, -1]
            self.ended |= torch.isin(fed, self.eos.to(ids.device))
            counted = ~self.ended & ~torch.isin(fed, self.special.to(ids.device))  # as the answer's text: no special tokens
            answering = self.positions == "response_avg" and seq == 1
            self.weights = counted.float()[:, None] if answering else torch.zeros(batch, seq, device=ids.device)
        assert self.counts is not None
        self.counts += self.weights.sum(1)

    def _prefill_weights(self, mask: torch.Tensor | None, batch: int, seq: int, device: torch.device) -> torch.Tensor:
        weights = torch.zeros(batch, seq, device=device)
        if self.positions == "prompt_last":
            weights[:, -1] = 1.0  # left padding: the last column is every prompt's last token
        elif self.positions == "prompt_avg":
            weights = torch.ones(batch, seq, device=device) if mask is None else mask[:, -seq:].to(device).float()
        return weights

    def add(self, index: int, hidden: torch.Tensor) -> None:
        assert self.sums is not None and self.weights is not None
        self.sums[index] += (hidden.float() * self.weights[..., None]).sum(1)

    @contextmanager
    def hooks(self) -> Iterator[None]:
        backbone = self.backbone
        base = backbone.model.base_model
        handles = [base.register_forward_pre_hook(self.on_forward, with_kwargs=True)]
        try:
            handles.append(backbone.layers[0].register_forward_pre_hook(self._embeddings, with_kwargs=True, prepend=True))
            for layer in range(1, backbone.n_layers):
                handles.append(backbone.block(layer).register_forward_hook(self._block_output(layer), prepend=True))
            handles.append(base.register_forward_hook(self._final_output))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _embeddings(self, module: torch.nn.Module, args: Any, kwargs: dict) -> None:
        self.add(0, args[0] if args else kwargs["hidden_states"])

    def _block_output(self, layer: int) -> Callable[[torch.nn.Module, Any, Any], None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.add(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    def _final_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.add(self.backbone.n_layers, output[0] if isinstance(output, tuple) else output.last_hidden_state)

    def reduced(self) -> list[torch.Tensor]:
        if self.sums is None or self.counts is None:
            return []
        means = self.sums / self.counts.clamp_min(1.0)[None, :, None]  # a row with no token counted stays 0
        return list(means.transpose(0, 1).cpu())
