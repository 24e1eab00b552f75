"""What a model does on the held-out sets: refusal rate on harmful requests, over-refusal and perplexity on benign ones."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..generation import generate
from ..judges.text import perplexity
from ..models import Backbone
from .data import Examples
from .refusal import Agreement, Rate, RefusalClassifier, agreement, rate_with_ci

ANSWER_TOKENS = 48


@dataclass
class RefusalMeasure:
    """Refusal rate of one model on one prompt set, by both classifiers, with the answers behind it."""

    keyword: Rate
    embedding: Rate
    agreement: Agreement
    answers: list[str] = field(repr=False)
    flags: list[bool] = field(repr=False)

    def to_dict(self, with_answers: bool = True) -> dict:
        out = {"keyword": self.keyword.to_dict(), "embedding": self.embedding.to_dict(), "agreement": self.agreement.to_dict()}
        return {**out, "answers": self.answers, "flags": self.flags} if with_answers else out


def refusals(
    backbone: Backbone, examples: Examples, classifier: RefusalClassifier, *, max_new_tokens: int = ANSWER_TOKENS, batch_size: int = 24
) -> RefusalMeasure:
    """Greedy answers to the prompts, classified; the phrase matcher's rate is the headline, the embedding's beside it."""
    answers = generate(backbone, examples.prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    keyword, embedded = classifier.keyword(answers), classifier.embedded(answers)
    return RefusalMeasure(rate_with_ci(keyword), rate_with_ci(embedded), agreement(keyword, embedded), answers, keyword)


def utility_perplexity(backbone: Backbone, examples: Examples) -> float:
    """Perplexity of the reference answers over all their tokens' mean log-probability (geometric mean per answer)."""
    scores = [s for s in perplexity(backbone, examples.prompts, examples.answers) if s is not None]
    return math.exp(sum(math.log(s) for s in scores) / len(scores)) if scores else float("nan")
