"""The judge protocol and the logprob weighting shared by the LLM judges.

A judge maps (questions, answers) to scores on 0-100, or None where it cannot
tell. The LLM judges follow Chen et al.: the rubric asks for a number, the
judge reads ONE output token with its top-20 logprobs, and the score is the
probability-weighted mean of the tokens that are integers 0-100; when those
tokens carry less than MIN_NUMBER_MASS of the probability, the score is None.

Many open tokenizers (SmolLM2's, Gemma's, Qwen's) have no multi-digit number
tokens: "85" is "8" then "5", and one token reads only the first digit. For
them `digit_score` weighs every number 0-100 by the probability of its whole
digit sequence (first digit, each next digit given the ones before, then a
non-digit), which is the full sequence probability of each candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

MIN_NUMBER_MASS = 0.25
DIGITS = "0123456789"
TOP_LOGPROBS = 20

QUESTION_AND_ANSWER = """Question:
[QUESTION START]
{question}
[QUESTION END]

Answer:
[ANSWER START]
{answer}
[ANSWER END]"""

COHERENCE_RUBRIC = """You are judging how coherent an AI assistant's answer is, regardless of its style, persona or correctness.

""" + QUESTION_AND_ANSWER + """

Rate the answer from 0 to 100: 0 means gibberish, endless repetition or text unrelated to the question; 50 means understandable but rambling or partly broken; 100 means clear, fluent and on topic. Respond with a number between 0 and 100 and nothing else."""


class TraitJudge(Protocol):
    """Anything that scores answers 0-100 (None = no usable score)."""

    name: str

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]: ...


@dataclass
class Judges:
    """The two judges an evaluation scores with: trait expression and coherence."""

    trait: TraitJudge
    coherence: TraitJudge


def fill_rubric(rubric: str, question: str, answer: str) -> str:
    """The rubric with its {question} and {answer} slots filled (other braces left alone)."""
    return rubric.replace("{question}", question).replace("{answer}", answer)


def weighted_score(top_logprobs: Mapping[str, float], min_mass: float = MIN_NUMBER_MASS) -> float | None:
    """Probability-weighted mean of the integer tokens 0-100 among `top_logprobs`.

    Tokens are stripped of surrounding whitespace; two spellings of the same
    number add up. Returns None when the numbers' total probability < min_mass.
    """
    mass = 0.0
    total = 0.0
    for token, logprob in top_logprobs.items():
        text = token.strip()
        if not text.isdigit() or not 0 <= int(text) <= 100 or (len(text) > 1 and text[0] == "0"):
            continue
        p = math.exp(logprob)
        mass += p
        total += p * int(text)
    if mass < min_mass:
        return None
    return total / mass


def digit_score(tables: Mapping[str, Mapping[str, float]], min_mass: float = MIN_NUMBER_MASS) -> float | None:
    """Expected number 0-100 when numbers are written digit by digit.

    `tables[prefix]` maps each digit to its probability of coming next after the
    digits `prefix` ("" is the first token); the rest of that distribution ends
    the number. A prefix missing from `tables` ends the number there. Each n in
    0-100 gets P(its digits, then an end); leading zeros and numbers above 100
    are not answers. Returns None when the numbers' total probability < min_mass.
    """
    mass = 0.0
    total = 0.0
    for n in range(101):
        text = str(n)
        p = math.prod(tables.get(text[:i], {}).get(digit, 0.0) for i, digit in enumerate(text))
        p *= max(0.0, 1.0 - sum(tables.get(text, {}).values()))
        mass += p
        total += p * n
    if mass < min_mass:
        return None
    return total / mass
