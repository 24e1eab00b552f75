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
non-digit), which is the full sequence probability of each candidate. It needs
the next-digit table after every plausible first digit and after "10": a
branch at least BRANCH_FLOOR likely whose table is missing makes the score
None, never a guess; numbers behind a less likely one are left out of the
mean, as the tokens outside the top 20 are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

MIN_NUMBER_MASS = 0.25
BRANCH_FLOOR = 0.01  # a digit branch at least this likely must be read (`unread_branches`)
EXTENDABLE = tuple(str(n) for n in range(1, 11))  # numbers a further digit keeps within 0-100
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

COHERENCE_RUBRIC = (
    """You are judging how coherent an AI assistant's answer is, regardless of its style, persona or correctness.

"""
    + QUESTION_AND_ANSWER
    + """

Rate the answer from 0 to 100: 0 means gibberish, endless repetition or text unrelated to the question; 50 means understandable but rambling or partly broken; 100 means clear, fluent and on topic. Respond with a number between 0 and 100 and nothing else."""
)

RELEVANCE_RUBRIC = (
    """You are judging how relevant an AI assistant's answer is to the question asked, regardless of its style, persona or correctness.

"""
    + QUESTION_AND_ANSWER
    + """

Rate the answer from 0 to 100: 0 means it ignores the question or talks about something else; 50 means it touches the question but is mostly off topic; 100 means it answers the question asked. Respond with a number between 0 and 100 and nothing else."""
)


class TraitJudge(Protocol):
    """Anything that scores answers 0-100 (None = no usable score)."""

    name: str

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]: ...


@dataclass
class Judges:
    """The judges an evaluation scores with: trait expression, coherence and, where asked for, relevance to the question."""

    trait: TraitJudge
    coherence: TraitJudge
    relevance: TraitJudge | None = None


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


def digit_score(tables: Mapping[str, Mapping[str, float]], min_mass: float = MIN_NUMBER_MASS, floor: float = BRANCH_FLOOR) -> float | None:
    """Expected number 0-100 when numbers are written digit by digit.

    `tables[prefix]` maps each digit to its probability of coming next after the
    digits `prefix` ("" is the first token); the rest of that distribution ends
    the number. Each n in 0-100 gets P(its digits, then an end); leading zeros
    and numbers above 100 are not answers. The end after 1-9 and 10 needs their
    table (a digit may follow); after other numbers it is read from their table
    when given, and is certain when not (a further digit makes no answer).
    Returns None when a branch at least `floor` likely has no table
    (`unread_branches`) or when the numbers' total probability < min_mass;
    numbers behind a less likely branch without a table are left out.
    """
    if unread_branches(tables, floor):
        return None
    mass = 0.0
    total = 0.0
    for n in range(101):
        p = _number_probability(tables, str(n))
        mass += p
        total += p * n
    if mass < min_mass:
        return None
    return total / mass


def _number_probability(tables: Mapping[str, Mapping[str, float]], text: str) -> float:
    """P(the digits of `text`, then an end); 0 where a table it needs is missing."""
    p = 1.0
    for i, digit in enumerate(text):
        table = tables.get(text[:i])
        if table is None:
            return 0.0
        p *= table.get(digit, 0.0)
    after = tables.get(text)
    if after is None:
        return 0.0 if text in EXTENDABLE else p
    return p * max(0.0, 1.0 - sum(after.values()))


def unread_branches(tables: Mapping[str, Mapping[str, float]], floor: float = BRANCH_FLOOR) -> list[str]:
    """The prefixes ("1".."9", "10") at least `floor` likely whose next-digit table `digit_score` needs and lacks,
    most likely first. "10" is reached with P("1") x P("0" after "1"), so it shows once "1" is read."""
    reach = {p: math.prod(tables.get(p[:i], {}).get(d, 0.0) for i, d in enumerate(p)) for p in EXTENDABLE}
    return sorted((p for p, r in reach.items() if r >= floor and p not in tables), key=lambda p: -reach[p])
