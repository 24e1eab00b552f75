"""One request's decoding state inside a running batch: how it picks tokens, what text it has sent, when it ends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ..generation import RowSampler
from ..steering import StepPositions

if TYPE_CHECKING:
    from .engine import Job


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could still begin a stop string (they wait until it is decided)."""
    return max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


class Use(NamedTuple):
    """One vector a row steers with: added with `coef`, or (with `cap_at`) capped to that range with strength `coef`."""

    name: str
    layers: tuple[int, ...]
    positions: StepPositions
    coef: float
    cap_at: str | None = None


class Row:
    """Tokens chosen with the request's own temperature, top_p and seed; text released once no stop string can claim it.

    `feed` takes each new token and returns the text to send now (never part of
    a stop string, never half a character). `finish_reason` is set when the
    row ends: "stop" (end of turn or a stop string) or "length".
    """

    def __init__(self, job: Job, tokenizer: Any, eos_ids: set[int], uses: Sequence[Use] = (), meters: Sequence[tuple[str, int]] = ()) -> None:
        self.job, self.tokenizer, self.eos_ids = job, tokenizer, eos_ids
        self.uses = list(uses)  # its steering, resolved once by the engine
        self.meters = list(meters)  # (vector, layer) pairs it meters
        self.sampler = RowSampler([job.seed], job.temperature, job.top_p) if job.temperature > 0 else None
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded answer already sent
        self.finish_reason: str | None = None

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from this row's logits [vocab]: greedy, or drawn from the row's own generator."""
        if self.sampler is None:
            return int(logits.argmax())
        # the warpers read only the scores, which HF types FloatTensor (CPU float32 only)
        return int(self.sampler(None, logits[None].float())[0].argmax())  # type: ignore[arg-type]

    def feed(self, token: int) -> str:
        """Record `token`; returns the new text to send (possibly empty) and sets `finish_reason` when the row ends."""
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return self._release(self._text(), final=True)
        self.ids.append(token)
        text = self._text()
        cuts = [i for i in (text.find(stop, max(0, self.sent - len(stop))) for stop in self.job.stop) if i >= 0]
        if cuts:
            self.finish_reason = "stop"
            return self._release(text[: min(cuts)], final=True)
        if len(self.ids) >= self.job.max_tokens:
            self.finish_reason = "length"
            return self._release(text, final=True)
        return self._release(text, final=False)

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _release(self, text: str, final: bool) -> str:
        if final:
            end = len(text.rstrip("\ufffd"))  # half a character at the very end is dropped
        elif text.endswith("\ufffd"):
            end = self.sent  # wait for the rest of the character
        else:
            end = len(text) - held_back(text, self.job.stop)
        new, self.sent = text[self.sent : max(end, self.sent)], max(end, self.sent)
        return new
