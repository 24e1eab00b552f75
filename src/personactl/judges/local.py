"""A local judge: the LLM judge's prompts and logprob weighting on a local HF model.

The judge model reads the filled rubric as a user turn. When its tokenizer
writes numbers such as "85" as one token, the score is Chen et al.'s: the
top-20 first tokens weighted over the integers 0-100. When it splits numbers
into digits (SmolLM2, Gemma, Qwen), the first token alone reads only "8", so the
score weighs every number 0-100 by the probability of its whole digit sequence
(`base.digit_score`): the first digit, the next digit after each first digit,
and a third after "10"; a number of two other digits is taken to end there
(a third digit would pass 100). It costs one forward of the prompt plus ten
two-token steps on copies of its KV cache.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..activations import make_batch, position_ids
from ..generation import chat_prompt
from ..models import Backbone
from .base import DIGITS, TOP_LOGPROBS, digit_score, fill_rubric, weighted_score

WHOLE_NUMBER_PROBES = (10, 42, 85, 100)  # one token each in tokenizers with multi-digit number tokens


@dataclass(frozen=True)
class DigitTokens:
    """The token ids a digit-splitting tokenizer writes numbers with."""

    first: list[list[int]]  # per digit: every token that is that digit, surrounding spaces allowed (first answer token)
    exact: list[int]  # per digit: the token that is exactly that digit (the digits after the first)


def digit_tokens(tokenizer: Any) -> DigitTokens | None:
    """The digit tokens, or None when the tokenizer writes numbers 0-100 as single tokens (or lacks plain digits)."""
    if all(len(tokenizer.encode(str(n), add_special_tokens=False)) == 1 for n in WHOLE_NUMBER_PROBES):
        return None
    first: list[list[int]] = [[] for _ in range(10)]
    for token, token_id in tokenizer.get_vocab().items():
        if any(ch.isdigit() for ch in token):
            text = tokenizer.decode([token_id]).strip()
            if len(text) == 1 and text in DIGITS:
                first[int(text)].append(token_id)
    exact = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
    if any(len(ids) != 1 for ids in exact):
        return None
    return DigitTokens(first, [ids[0] for ids in exact])


class LocalJudge:
    """Score answers with `backbone` reading `rubric` (Chen et al. mechanics, offline)."""

    def __init__(self, backbone: Backbone, rubric: str, name: str | None = None, batch_size: int = 8) -> None:
        self.backbone = backbone
        self.rubric = rubric
        self.name = name or f"local:{backbone.name}"
        self.batch_size = batch_size

    @cached_property
    def digits(self) -> DigitTokens | None:
        """How this judge's tokenizer writes numbers (None: whole numbers are single tokens)."""
        return digit_tokens(self.backbone.tokenizer)

    def _forward(self, texts: Sequence[str], use_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Next-token probabilities after each text, its attention mask and (with `use_cache`) the KV cache."""
        batch = make_batch(self.backbone, texts)
        mask = batch.attention_mask.to(self.backbone.device)
        out = self.backbone.model(
            input_ids=batch.input_ids.to(self.backbone.device),
            attention_mask=mask,
            position_ids=position_ids(mask),
            use_cache=use_cache,
            logits_to_keep=1,
        )
        return torch.softmax(out.logits[:, -1].float(), -1), mask, out.cache

    def top_logprobs(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Top-20 first-token logprobs for each judge prompt, keyed by decoded token."""
        texts = [self.backbone.chat(chat_prompt(p)) for p in prompts]
        tables: list[dict[str, float]] = []
        for start in range(0, len(texts), self.batch_size):
            with torch.no_grad():
                probs = self._forward(texts[start : start + self.batch_size])[0]
            values, ids = probs.log().topk(TOP_LOGPROBS, dim=-1)
            for row_values, row_ids in zip(values.tolist(), ids.tolist()):
                table: dict[str, float] = {}
                for logprob, token_id in zip(row_values, row_ids):
                    token = self.backbone.tokenizer.decode([token_id])
                    table[token] = float(np.logaddexp(table.get(token, -np.inf), logprob))  # same text, two ids
                tables.append(table)
        return tables

    def digit_tables(self, prompts: Sequence[str]) -> list[dict[str, dict[str, float]]]:
        """For each judge prompt, `digit_score`'s tables: next-digit probabilities after "", "0".."9" and "10"."""
        digits = self.digits
        if digits is None:
            raise ValueError("this tokenizer writes whole numbers as single tokens: use top_logprobs")
        texts = [self.backbone.chat(chat_prompt(p)) for p in prompts]
        exact = torch.tensor(digits.exact, device=self.backbone.device)
        tables: list[dict[str, dict[str, float]]] = []
        for start in range(0, len(texts), self.batch_size):
            with torch.no_grad():
                first, mask, cache = self._forward(texts[start : start + self.batch_size], use_cache=True)
                rows = len(first)
                after = position_ids(mask)[:, -1:]
                steps = []  # per first digit d: probabilities after "d" and after "d0"
                for d in range(10):
                    ids = exact[[d, 0]].expand(rows, 2)
                    out = self.backbone.model(
                        input_ids=ids,
                        attention_mask=torch.cat([mask, torch.ones_like(ids)], 1),
                        position_ids=torch.cat([after + 1, after + 2], 1),
                        cache=copy.deepcopy(cache),  # sliding-window caches cannot be cropped back
                        use_cache=True,
                    )
                    steps.append(torch.softmax(out.logits.float(), -1)[:, :, exact])
            for i in range(rows):
                table = {"": {str(d): float(first[i, digits.first[d]].sum()) for d in range(10)}}
                table.update({str(d): dict(zip(DIGITS, steps[d][i, 0].tolist())) for d in range(10)})
                table["10"] = dict(zip(DIGITS, steps[1][i, 1].tolist()))
                tables.append(table)
        return tables

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        prompts = [fill_rubric(self.rubric, q, a) for q, a in zip(questions, answers)]
        if self.digits is None:
            return [weighted_score(t) for t in self.top_logprobs(prompts)]
        return [digit_score(t) for t in self.digit_tables(prompts)]
