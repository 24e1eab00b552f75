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
from collections.abc import Sequence
from dataclasses import dataclass

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
def perplexity(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 24) -> list[float | None]:
    """Perplexity of each answer given its (formatted) prompt under the model as loaded.

    Call it outside any steering context to score against the unsteered model.
    Logits are computed only for the answer positions. Rows that repeat a prompt
    (a sweep's coefficients) are batched together and their prompt is run once,
    its KV cache copied to each of them.
    """
    first_seen = {p: i for i, p in reversed(list(enumerate(prompts)))}
    order = sorted(range(len(prompts)), key=lambda i: first_seen[prompts[i]])
    scores: list[float | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch_prompts, batch_answers = [prompts[i] for i in rows], [answers[i] for i in rows]
        shared = len(set(batch_prompts)) < len(batch_prompts)
        for i, score in zip(rows, (_shared_prompt_perplexity if shared else _batch_perplexity)(backbone, batch_prompts, batch_answers)):
            scores[i] = score
    return scores


@torch.no_grad()
def _batch_perplexity(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """One forward of prompt + answer per row (left padding puts every answer last)."""
    batch = make_batch(backbone, prompts, answers)
    keep = int(batch.response_mask.sum(1).max()) + 1
    if keep == 1:  # no answer has a token
        return [None] * len(prompts)
    logits = backbone.model(
        input_ids=batch.input_ids.to(backbone.device),
        attention_mask=batch.attention_mask.to(backbone.device),
        position_ids=position_ids(batch.attention_mask).to(backbone.device),
        use_cache=False,
        logits_to_keep=keep,
    ).logits.float()[:, -keep:-1]
    targets = batch.input_ids[:, -keep + 1 :].to(logits.device)
    token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return _per_row(token_lp, batch.response_mask[:, -keep + 1 :].to(logits.device))


@torch.no_grad()
def _shared_prompt_perplexity(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """Each distinct prompt once (left-padded, cached), then every row's answer (right-padded) on a copy of its cache."""
    device = backbone.device
    distinct = list(dict.fromkeys(prompts))
    rows = torch.tensor([distinct.index(p) for p in prompts], device=device)
    prompt_batch = make_batch(backbone, distinct)
    prompt_mask = prompt_batch.attention_mask.to(device)
    out = backbone.model(
        input_ids=prompt_batch.input_ids.to(device),
        attention_mask=prompt_mask,
        position_ids=position_ids(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[rows]
    cache = out.cache
    cache.batch_select_indices(rows)
    answer_ids = backbone.encode(list(answers))
    width = max(1, max(len(a) for a in answer_ids))
    ids = torch.full((len(answer_ids), width), backbone.pad_id, dtype=torch.long, device=device)
    answer_mask = torch.zeros_like(ids)
    for i, a in enumerate(answer_ids):
        ids[i, : len(a)] = torch.tensor(a, dtype=torch.long)
        answer_mask[i, : len(a)] = 1
    token_lp = first.gather(-1, ids[:, :1])
    if width > 1:
        logits = backbone.model(
            input_ids=ids,
            attention_mask=torch.cat([prompt_mask[rows], answer_mask], 1),
            position_ids=prompt_mask.sum(1)[rows, None] + torch.arange(width, device=device),
            cache=cache,
        ).logits.float()[:, :-1]
        token_lp = torch.cat([token_lp, torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]], 1)
    return _per_row(token_lp, answer_mask.bool())


def _per_row(token_lp: torch.Tensor, mask: torch.Tensor) -> list[float | None]:
    """exp(-mean log-probability) over each row's answer tokens; None for an empty answer."""
    scores: list[float | None] = []
    for row in range(len(token_lp)):
        n = int(mask[row].sum())
        scores.append(math.exp(-float(token_lp[row][mask[row]].sum()) / n) if n else None)
    return scores
