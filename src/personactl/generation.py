"""Batched chat generation: left padding, greedy or seeded sampling, optional steering."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from .activations import make_batch, position_ids
from .capture import GenerationCapture
from .models import Backbone, Message
from .steering import Condition, SteeringTerm, steer

Prompt = str | Sequence[Message]

# Base models with the plain transcript format run on into the next turn.
PLAIN_STOPS = ("\nUser:", "\nSystem:")


def format_prompts(backbone: Backbone, prompts: Sequence[Prompt]) -> list[str]:
    """Chat-format message lists; strings pass through as already formatted."""
    return [p if isinstance(p, str) else backbone.chat(p) for p in prompts]


def chat_prompt(question: str, system: str | None = None) -> list[Message]:
    """Messages for one question, with an optional system instruction."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def record_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed for one record, from the run's seed and the parts that name the record."""
    return zlib.crc32("|".join(map(str, (seed, *parts))).encode()) & 0x7FFFFFFF


class RowSampler(LogitsProcessor):
    """Samples each row with its own seeded generator and leaves only that token for greedy search.

    HF's sampling draws the whole batch from one global RNG, so a row's answer
    depends on which rows share its batch. Here row i always draws from
    `torch.Generator().manual_seed(seeds[i])`, whatever the batch.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        cdf = torch.softmax(scores.float(), dim=-1).cumsum(-1)
        # inverse-transform sampling, all rows at once; u in (0, 1] never lands on a zero-probability token
        u = torch.stack([1.0 - torch.rand((), generator=g) for g in self.generators]).to(cdf.device)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_max(cdf.shape[-1] - 1)
        only = torch.full_like(scores, -float("inf"))
        return only.scatter_(1, picked, 0.0)  # type: ignore[return-value]  # HF types logits FloatTensor (CPU float32 only)


@torch.no_grad()
def generate(
    backbone: Backbone,
    prompts: Sequence[Prompt],
    *,
    steering: Sequence[SteeringTerm] = (),
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    condition: Condition | None = None,
    on_condition: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    observers: Sequence[LogitsProcessor] = (),
    capture: GenerationCapture | None = None,
) -> list[str]:
    """Answers to `prompts` (strings are used as formatted; message lists are chat-formatted).

    `temperature=0` is greedy; `min_new_tokens` forces a length (for timing). Per-row coefficients in `steering` have one value
    per prompt; each batch gets its slice. Sampling draws row i from its own
    seed, `seeds[i]` (default `seed + i`), so a row's answer does not depend on
    the batch size or on the other rows, and a resumed run reproduces it.
    With a `condition`, a row is steered only if its prompt fires it (see
    `steering.Condition`); `on_condition(fired, scores)` gets each batch's decisions.

    When every steering term acts on `response` positions and a batch repeats a
    prompt (a coefficient sweep, several samples), each distinct prompt but its
    last token is prefilled once, unsteered, and its cache is copied to its rows
    (`shared_prefill`); the answers are those of separate runs. A condition reads
    the whole prompt, so conditional generation never shares the prefill.

    `observers` read each step's raw logits (before sampling), one batch at a time. A `capture` keeps every row's
    reduced hidden states from these same forward passes (`capture.GenerationCapture`): no second pass is needed.
    """
    texts = format_prompts(backbone, prompts)
    if seeds is None:
        seeds = [seed + i for i in range(len(texts))]
    elif len(seeds) != len(texts):
        raise ValueError(f"{len(seeds)} seeds for {len(texts)} prompts")
    answers: list[str] = []
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        batch_texts = texts[rows]
        if condition is None and not (capture and capture.needs_whole_prompt) and shares_prefill(steering, batch_texts):
            input_ids, attention_mask, cache = shared_prefill(backbone, batch_texts)
        else:
            batch = make_batch(backbone, batch_texts)
            input_ids, attention_mask, cache = batch.input_ids.to(backbone.device), batch.attention_mask.to(backbone.device), None
        processors = LogitsProcessorList([*observers, *([RowSampler(seeds[rows], temperature, top_p)] if temperature > 0 else [])])
        with (
            steer(backbone, *(term.with_rows(rows) for term in steering), condition=condition) as gate,
            capture.batch(eos_ids(backbone)) if capture else nullcontext(),
        ):
            out = backbone.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                cache=cache,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                pad_token_id=backbone.pad_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=processors,
                return_dict_in_generate=True,
            )
            if capture and capture.positions == "response_avg":
                _feed_last_tokens(backbone, out, attention_mask)
        if gate is not None and on_condition is not None:
            assert gate.fired is not None and gate.scores is not None  # the prefill decided
            on_condition(gate.fired, gate.scores)
        new_tokens = out.sequences[:, input_ids.shape[1] :]
        answers.extend(_clean(backbone, backbone.tokenizer.decode(t, skip_special_tokens=True)) for t in new_tokens)
        if on_batch is not None:
            on_batch(len(new_tokens))
    return answers


def eos_ids(backbone: Backbone) -> set[int]:
    """The token ids that end an answer."""
    eos = getattr(backbone.model.generation_config, "eos_token_id", None) or backbone.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def _feed_last_tokens(backbone: Backbone, out: Any, prompt_mask: torch.Tensor) -> None:
    """One more forward of each row's last generated token (generate never feeds it back), so a capture sees the
    state of every answer token; rows that ended on an end-of-turn token are not counted."""
    steps = out.sequences.shape[1] - prompt_mask.shape[1]
    mask = torch.cat([prompt_mask, torch.ones(len(prompt_mask), steps, dtype=prompt_mask.dtype, device=prompt_mask.device)], dim=1)
    backbone.model.base_model(
        input_ids=out.sequences[:, -1:], attention_mask=mask, position_ids=position_ids(mask)[:, -1:], cache=out.cache, use_cache=True
    )


def shares_prefill(steering: Sequence[SteeringTerm], texts: Sequence[str]) -> bool:
    """Whether a batch can prefill each distinct prompt once: no term touches the prompt and a prompt repeats."""
    return all(term.positions == "response" for term in steering) and len(set(texts)) < len(texts)


@torch.no_grad()
def shared_prefill(backbone: Backbone, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Left-padded ids and mask of `texts`, and a KV cache of all but their last token, computed once per distinct text.

    `response` steering starts at the last prompt token, so everything before it
    is the same for every coefficient: run it once, unsteered, and copy the cache
    rows (generate then feeds only the last token).
    """
    distinct = list(dict.fromkeys(texts))
    batch = make_batch(backbone, distinct)
    ids, mask = batch.input_ids.to(backbone.device), batch.attention_mask.to(backbone.device)
    out = backbone.model(
        input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask[:, :-1]), use_cache=True, logits_to_keep=1
    )
    rows = torch.tensor([distinct.index(t) for t in texts], device=backbone.device)
    cache = out.cache
    cache.batch_select_indices(rows)
    return ids[rows], mask[rows], cache


def _clean(backbone: Backbone, answer: str) -> str:
    if not getattr(backbone.tokenizer, "chat_template", None):
        for stop in PLAIN_STOPS:
            answer = answer.split(stop)[0]
    return answer.strip()
