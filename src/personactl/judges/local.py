"""A local judge: the LLM judge's prompts and logprob weighting on a local HF model.

The judge model reads the filled rubric as a user turn and we take the
distribution of its first answer token: the top-20 tokens, weighted over the
integers 0-100 exactly as for the API judge. Tokenizers that split numbers
into digits only offer 0-9 as single tokens, so small models judge coarsely.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..activations import make_batch, position_ids
from ..generation import chat_prompt
from ..models import Backbone
from .base import TOP_LOGPROBS, fill_rubric, weighted_score


class LocalJudge:
    """Score answers with `backbone` reading `rubric` (Chen et al. mechanics, offline)."""

    def __init__(self, backbone: Backbone, rubric: str, name: str | None = None, batch_size: int = 8) -> None:
        self.backbone = backbone
        self.rubric = rubric
        self.name = name or f"local:{backbone.name}"
        self.batch_size = batch_size

    def top_logprobs(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Top-20 first-token logprobs for each judge prompt, keyed by decoded token."""
        texts = [self.backbone.chat(chat_prompt(p)) for p in prompts]
        tables: list[dict[str, float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = make_batch(self.backbone, texts[start : start + self.batch_size])
            with torch.no_grad():
                logits = self.backbone.model(
                    input_ids=batch.input_ids.to(self.backbone.device),
                    attention_mask=batch.attention_mask.to(self.backbone.device),
                    position_ids=position_ids(batch.attention_mask).to(self.backbone.device),
                    use_cache=False,
                    logits_to_keep=1,
                ).logits[:, -1].float()
            values, ids = torch.log_softmax(logits, -1).topk(TOP_LOGPROBS, dim=-1)
            for row_values, row_ids in zip(values.tolist(), ids.tolist()):
                table: dict[str, float] = {}
                for logprob, token_id in zip(row_values, row_ids):
                    token = self.backbone.tokenizer.decode([token_id])
                    table[token] = float(np.logaddexp(table.get(token, -np.inf), logprob))  # same text, two ids
                tables.append(table)
        return tables

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        prompts = [fill_rubric(self.rubric, q, a) for q, a in zip(questions, answers)]
        return [weighted_score(t) for t in self.top_logprobs(prompts)]
