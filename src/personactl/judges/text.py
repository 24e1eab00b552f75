"""Text metrics that need no judge: perplexity, repetition, collapse, length.

An answer is *collapsed* when more than COLLAPSE_REPEAT of its word 3-grams
repeat an earlier 3-gram (e.g. "aye, aye, aye, ..."), or when it has fewer
than MIN_WORDS words. The offline coherence score is 100 x the fraction of
distinct word 3-grams, 0 for a collapsed answer: over-steering on small models
fails mostly by repetition, which this catches without a judge model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from ..activations import make_batch, position_ids
from ..models import Backbone

COLLAPSE_REPEAT = 0.5
MIN_WORDS = 3
_WORD = re.compile(r"\w+(?:'\w+)?")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int) -> float:
    """Fraction of the answer's word n-grams that are distinct (1.0 for very short texts)."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one."""
    return 1.0 - distinct_n(text, n)


def is_collapsed(text: str) -> bool:
    """Degenerate output: mostly repeated 3-grams, or almost no words."""
    return len(words(text)) < MIN_WORDS or repeated_ngram_ratio(text, 3) > COLLAPSE_REPEAT


@dataclass(frozen=True)
class TextMetrics:
    """What the text itself says about one answer."""

    n_words: int
    distinct_2: float
    distinct_3: float
    collapsed: bool


def text_metrics(answer: str) -> TextMetrics:
    return TextMetrics(len(words(answer)), distinct_n(answer, 2), distinct_n(answer, 3), is_collapsed(answer))


class RepetitionCoherenceJudge:
    """Offline coherence: 100 x distinct 3-gram fraction; collapsed answers score 0."""

    name = "repetition"

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return [0.0 if is_collapsed(a) else 100.0 * distinct_n(a, 3) for a in answers]


@torch.no_grad()
def perplexity(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8) -> list[float | None]:
    """Perplexity of each answer given its (formatted) prompt under the model as loaded.

    Call it outside any steering context to score against the unsteered model.
    Logits are computed only for the answer positions (left padding puts them last).
    """
    scores: list[float | None] = []
    for start in range(0, len(prompts), batch_size):
        batch = make_batch(backbone, prompts[start : start + batch_size], answers[start : start + batch_size])
        keep = int(batch.response_mask.sum(1).max()) + 1
        logits = backbone.model(
            input_ids=batch.input_ids.to(backbone.device),
            attention_mask=batch.attention_mask.to(backbone.device),
            position_ids=position_ids(batch.attention_mask).to(backbone.device),
            use_cache=False,
            logits_to_keep=keep,
        ).logits.float()[:, -keep:-1]
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = batch.input_ids[:, -keep + 1 :].to(logprobs.device)
        token_lp = logprobs.gather(-1, targets[..., None])[..., 0]
        mask = batch.response_mask[:, -keep + 1 :].to(logprobs.device)
        for row in range(len(targets)):
            n = int(mask[row].sum())
            scores.append(math.exp(-float(token_lp[row][mask[row]].sum()) / n) if n else None)
    return scores
