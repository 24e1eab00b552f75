"""Batched chat generation: left padding, greedy or seeded sampling, optional steering."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from .activations import make_batch
from .models import Backbone, Message
from .steering import SteeringTerm, steer

Prompt = Union[str, Sequence[Message]]

# Base models with the plain transcript format run on into the next turn.
PLAIN_STOPS = ("\nUser:", "\nSystem:")


def format_prompts(backbone: Backbone, prompts: Sequence[Prompt]) -> list[str]:
    """Chat-format message lists; strings pass through as already formatted."""
    return [p if isinstance(p, str) else backbone.chat(p) for p in prompts]


def chat_prompt(question: str, system: str | None = None) -> list[Message]:
    """Messages for one question, with an optional system instruction."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


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
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Answers to `prompts` (strings are used as formatted; message lists are chat-formatted).

    `temperature=0` is greedy; `min_new_tokens` forces a length (for timing). Per-row coefficients in `steering` have one value
    per prompt; each batch gets its slice. Sampling is seeded per batch
    (`seed + first row`), so a run is reproducible for a given batch size.
    """
    texts = format_prompts(backbone, prompts)
    answers: list[str] = []
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        batch = make_batch(backbone, texts[rows])
        torch.manual_seed(seed + start)
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with steer(backbone, *(term.with_rows(rows) for term in steering)):
            out = backbone.model.generate(
                input_ids=batch.input_ids.to(backbone.device),
                attention_mask=batch.attention_mask.to(backbone.device),
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                pad_token_id=backbone.pad_id,
                **sampling,
            )
        new_tokens = out[:, batch.input_ids.shape[1] :]
        answers.extend(_clean(backbone, backbone.tokenizer.decode(t, skip_special_tokens=True)) for t in new_tokens)
        if on_batch is not None:
            on_batch(len(new_tokens))
    return answers


def _clean(backbone: Backbone, answer: str) -> str:
    if not getattr(backbone.tokenizer, "chat_template", None):
        for stop in PLAIN_STOPS:
            answer = answer.split(stop)[0]
    return answer.strip()
