"""Few-shot persona: the model's own extraction answers placed before the question as earlier chat turns.

For coef > 0 the shots are (question, positive answer) pairs from the vector's
`.pairs.jsonl`, for coef < 0 (question, negative answer), and at 0 none. |coef|
sets how many: SHOTS_PER_UNIT * round(|coef|) (at least SHOTS_PER_UNIT), capped
by the pairs there are. The shots are the first usable pairs in a fixed
shuffled order (seed 0), skipping the pair whose question is being asked, so
every row of a sweep sees the same examples for the same coefficient.

The method runs on the local model (`--backend hf`, the default) or through an
OpenAI-compatible endpoint (`--backend openai:MODEL`); only the message lists
are built here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..backends import parse_backend
from ..extraction import ContrastivePair
from ..generation import generate
from ..methods import LayerSpec, MethodContext, MethodError
from ..models import Message
from .api import Sampling

SHOTS_PER_UNIT = 2


def shots(pairs: Sequence[ContrastivePair], coef: float, question: str, per_unit: int = SHOTS_PER_UNIT) -> list[Message]:
    """The prior turns for one row: user/assistant messages from the pairs' positive or negative side."""
    if coef == 0:
        return []
    usable = [p for p in pairs if p.pos_answer.strip() and p.neg_answer.strip() and p.question != question]
    order = list(range(len(usable)))
    random.Random(0).shuffle(order)
    k = per_unit * max(1, round(abs(coef)))
    seen: set[str] = set()
    turns: list[Message] = []
    for i in order:
        pair = usable[i]
        if pair.question in seen:
            continue
        seen.add(pair.question)
        turns += [{"role": "user", "content": pair.question}, {"role": "assistant", "content": pair.pos_answer if coef > 0 else pair.neg_answer}]
        if len(seen) == k:
            break
    return turns


def fewshot_messages(pairs: Sequence[ContrastivePair], questions: Sequence[str], coefs: Sequence[float]) -> list[list[Message]]:
    """One conversation per row: its shots, then the question."""
    return [shots(pairs, c, q) + [{"role": "user", "content": q}] for q, c in zip(questions, coefs)]


@dataclass
class FewShotMethod:
    """Few-shot examples from the extraction answers, on the local model or through the API."""

    ctx: MethodContext
    name: str = "fewshot"
    uses_layers: bool = False

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        if not self.ctx.pairs and any(c != 0 for c in coefs):
            raise MethodError("method 'fewshot' needs the extraction answers: give a vector with its .pairs.jsonl beside it, or no --vector")
        conversations = fewshot_messages(self.ctx.pairs, questions, coefs)
        s = self.ctx.settings
        kind, _ = parse_backend(self.ctx.options.get("backend") or "hf")
        if kind == "openai":
            from .modulation import api_generator  # noqa: PLC0415

            return api_generator(self.ctx, self.name).chat(conversations, Sampling(s.temperature, max_tokens=s.max_new_tokens), seeds)
        if kind != "hf":
            raise MethodError(f"method 'fewshot' runs on --backend hf or openai:MODEL, not {kind}")
        return generate(
            self.ctx.backbone, conversations, max_new_tokens=s.max_new_tokens, temperature=s.temperature, seeds=seeds, batch_size=s.batch_size
        )
