"""The digit branches an API judge's greedy answer did not take, read with follow-up requests.

A chat completion shows the next-token table only along the tokens it wrote:
after "9" when it wrote "95", never after "1". `digit_score` needs the table
after every plausible first digit and after "10" (`unread_branches`), so the
judge asks again with the branch's digits already written, in one of two ways:

- prefill: the digits as a final assistant message, which the server continues
  (llama.cpp's server; vLLM with `continue_final_message`, sent along). A
  server that answers such a message with a new turn (llama-cpp-python, this
  project's server) is found by one probe per judge: the greedy answer's first
  token, prefilled, must give back the table the first request showed after it.
- grammar: a GBNF grammar that writes the digits and leaves the rest free
  (llama-cpp-python, llama.cpp). Each answer is checked: it must begin with the
  digits and show the first request's first table, so its logprobs are the
  model's and not the grammar's.

Tables are compared by total variation. A server's logprobs move by a few
hundredths between batch shapes (llama.cpp's quantized kernels: 0.19 and 0.22
for one token), while a new turn in place of a continuation gives another
table altogether; the tolerance is SAME_TABLE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .base import DIGITS

SAME_TABLE = 0.2  # total variation under which two top-logprob tables are one distribution
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM's prefill switch; others ignore it
Tables = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Completion:
    """One greedy completion: its tokens, each position's top logprobs, and whether the model ended it."""

    tokens: list[str]
    tables: list[dict[str, float]]
    stopped: bool  # False: max_tokens cut it

    @classmethod
    def from_choice(cls, choice: Any) -> Completion:
        """From a Chat Completions choice (no logprobs: no tokens)."""
        content = (choice.logprobs.content if choice.logprobs is not None else None) or []
        tables = [{top.token: top.logprob for top in position.top_logprobs} for position in content]
        return cls([position.token for position in content], tables, choice.finish_reason == "stop")

    def after(self, n: int) -> Completion:
        """The completion from its `n`-th token on."""
        return Completion(self.tokens[n:], self.tables[n:], self.stopped)


def whole_numbers(table: dict[str, float]) -> bool:
    """Whether a first-token table offers multi-digit numbers (the tokenizer has them: Chen et al.'s one-token reading)."""
    return any(len(t.strip()) > 1 and t.strip().isdigit() for t in table)


def digit_table(table: dict[str, float], strip: bool = False) -> dict[str, float]:
    """P(each digit next) from top logprobs; spellings with spaces count only when `strip` (the first answer token)."""
    out: dict[str, float] = {}
    for token, logprob in table.items():
        text = token.strip() if strip else token
        if len(text) == 1 and text in DIGITS:
            out[text] = out.get(text, 0.0) + math.exp(logprob)
    return out


def path_tables(completion: Completion, prefix: str = "") -> Tables:
    """`digit_score`'s tables along a completion written after the digits `prefix`.

    Each position gives the table after the digits so far, up to the first token
    that is not one digit. Where the model ended the completion right after
    digits, the number ends there (the API shows no table past the end: it was
    the likeliest next token); where max_tokens cut it, the next table is unknown.
    """
    tables: Tables = {}
    path = prefix
    for token, table in zip(completion.tokens, completion.tables):
        tables[path] = digit_table(table, strip=not path)
        text = token if path else token.strip()
        if len(text) != 1 or text not in DIGITS:
            return tables
        path += text
    if completion.stopped:
        tables[path] = {}
    return tables


def table_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Total variation between two top-logprob tables (a token one of them lacks counts as 0 there)."""
    return 0.5 * sum(abs(math.exp(a.get(t, -math.inf)) - math.exp(b.get(t, -math.inf))) for t in a.keys() | b.keys())


def prefill_request(prompt: str, prefix: str, max_tokens: int) -> dict[str, Any]:
    """Chat request arguments that ask the server to continue an answer that begins with `prefix`."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": prefix}]
    return {"messages": messages, "max_tokens": max_tokens, "extra_body": CONTINUE}


def continues(probe: Completion, first: Completion) -> bool:
    """Whether a prefill of `first`'s first token gave back what `first` showed after it (the server continues)."""
    if len(first.tables) < 2:
        return first.stopped and not probe.tokens
    return bool(probe.tables) and table_distance(probe.tables[0], first.tables[1]) <= SAME_TABLE


def grammar_request(prompt: str, prefix: str, max_tokens: int) -> dict[str, Any]:
    """Chat request arguments with a GBNF grammar that writes the digits `prefix`, then anything."""
    grammar = f'root ::= "{prefix}" [^\\x00]*'
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": len(prefix) + max_tokens, "extra_body": {"grammar": grammar}}


def after_grammar(answer: Completion, first: Completion, prefix: str) -> Tables | None:
    """The tables after `prefix` from a grammar-forced answer; None when the answer does not begin with the
    digits or its first table is not `first`'s (the server ignored the grammar or reports constrained logprobs)."""
    n = len(prefix)
    if answer.tokens[:n] != list(prefix) or table_distance(answer.tables[0], first.tables[0]) > SAME_TABLE:
        return None
    return path_tables(answer.after(n), prefix)
