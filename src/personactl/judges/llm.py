"""The LLM judge: any OpenAI-compatible endpoint, scored from one token's logprobs.

As in Chen et al.'s persona_vectors judge, the filled rubric goes out as one
user message with temperature=0 and the top-20 logprobs; the score is the
probability-weighted mean over the integer tokens 0-100 of the first answer
token (`base.weighted_score`). A served model whose tokenizer splits numbers
into digits (Qwen's, SmolLM2's) offers only 0-9 there, so the judge asks for
NUMBER_TOKENS tokens and, when the first position holds no multi-digit number,
reads the number digit by digit along the returned tokens (`number_tables`). Requests run concurrently under a semaphore, are
retried with exponential backoff on rate limits, server errors, timeouts and
dropped connections, and are cached on disk when a JudgeCache is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import math
import os
import random
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import openai

from ..errors import PersonactlError
from .base import COHERENCE_RUBRIC, DIGITS, TOP_LOGPROBS, digit_score, fill_rubric, weighted_score
from .cache import JudgeCache

BASE_URL_ENVS = ("PERSONACTL_JUDGE_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENVS = ("PERSONACTL_JUDGE_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
NUMBER_TOKENS = 3  # "100" written digit by digit
T = TypeVar("T")


class JudgeError(PersonactlError):
    """A judge that cannot run: no key, a bad spec, a request the endpoint refuses."""


def _env(names: Sequence[str]) -> str | None:
    """The first non-empty environment variable among `names`."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _first_line(err: openai.APIStatusError) -> str:
    """The endpoint's own error message (its first line), falling back to the client's."""
    body = err.body
    message = body.get("message") if isinstance(body, dict) else None
    lines = str(message or err.message).strip().splitlines()
    return lines[0] if lines else ""


def async_client(base_url: str | None, api_key: str, timeout: float) -> openai.AsyncOpenAI:
    """The async client every personactl call to an OpenAI-compatible endpoint uses (retries are ours: `with_retries`)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)


async def with_retries(
    call: Callable[[], Awaitable[T]], label: str, max_retries: int, backoff: float, error: type[PersonactlError] | None = None
) -> T:
    """`call()`, retried with exponential backoff on rate limits, 5xx, timeouts and dropped connections;
    other refusals (4xx) raise at once. `label` names the caller in the one-line `error` (default JudgeError)."""
    error = error or JudgeError
    for attempt in range(max_retries + 1):
        try:
            return await call()
        except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as err:
            # APITimeoutError is an APIConnectionError; InternalServerError is any 5xx.
            if attempt == max_retries:
                raise error(
                    f"{label} still failing after {max_retries + 1} attempts ({type(err).__name__}: {err}); "
                    "lower the concurrency or try again later"
                ) from err
            delay = backoff * 2**attempt
            await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))
        except openai.APIStatusError as err:
            raise error(f"{label} refused the request: HTTP {err.status_code}: {_first_line(err)}") from err
    raise AssertionError("unreachable")


class OpenAIJudge:
    """Scores (question, answer) pairs 0-100 with a rubric sent to an OpenAI-compatible chat model."""

    def __init__(
        self,
        model: str,
        rubric: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 0.5,
        cache: JudgeCache | None = None,
        timeout: float = 60,
    ) -> None:
        api_key = api_key or _env(API_KEY_ENVS)
        if not api_key:
            raise JudgeError(
                f"no API key for the judge model {model!r}: set PERSONACTL_JUDGE_API_KEY (or OPENAI_API_KEY), "
                "or pass api_key; a local server that needs no key accepts any non-empty value"
            )
        if concurrency < 1:
            raise JudgeError(f"judge concurrency must be at least 1, got {concurrency}")
        self.model = model
        self.rubric = rubric
        self.name = name or f"openai:{model}"
        self.base_url = base_url or _env(BASE_URL_ENVS)
        self.api_key = api_key
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.cache = cache
        self.timeout = timeout
        rubric_hash = hashlib.sha256(rubric.encode()).hexdigest()[:12]
        self.judge_id = f"openai:{model}@{self.base_url or DEFAULT_BASE_URL}#{rubric_hash}#digits"  # how scores are read

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.name!r}, base_url={self.base_url or DEFAULT_BASE_URL!r})"

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        """Blocking `ascore`; from inside a running event loop it runs on a fresh thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore(questions, answers))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.ascore(questions, answers)).result()

    async def ascore(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        """Scores in input order; cached pairs are not sent, duplicate pairs are sent once."""
        if len(questions) != len(answers):
            raise JudgeError(f"the judge got {len(questions)} questions but {len(answers)} answers")
        pairs = list(zip(questions, answers))
        known: dict[tuple[str, str], float | None] = {}
        todo: list[tuple[str, str]] = []
        for pair in dict.fromkeys(pairs):
            hit, value = self.cache.get(self.judge_id, *pair) if self.cache is not None else (False, None)
            if hit:
                known[pair] = value
            else:
                todo.append(pair)
        if todo:
            semaphore = asyncio.Semaphore(self.concurrency)
            async with async_client(self.base_url, self.api_key, self.timeout) as client:
                tasks = [asyncio.ensure_future(self._score_one(client, semaphore, q, a)) for q, a in todo]
                try:
                    scores = await asyncio.gather(*tasks)
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    raise
            known.update(zip(todo, scores))
        return [known[pair] for pair in pairs]

    async def _score_one(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, question: str, answer: str
    ) -> float | None:
        """One judgement, retried on transient failures and stored in the cache as soon as it is known."""
        prompt = fill_rubric(self.rubric, question, answer)
        async with semaphore:  # held through the backoff too, so a rate-limited endpoint sees fewer calls
            completion = await with_retries(
                lambda: client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=NUMBER_TOKENS,
                    temperature=0,
                    logprobs=True,
                    top_logprobs=TOP_LOGPROBS,
                    seed=0,
                ),
                f"judge {self.model!r} at {self.base_url or DEFAULT_BASE_URL}", self.max_retries, self.backoff,
            )
        choice = completion.choices[0] if completion.choices else None
        content = choice.logprobs.content if choice is not None and choice.logprobs is not None else None
        if not content:
            raise JudgeError(
                f"judge {self.model!r} at {self.base_url or DEFAULT_BASE_URL} returns no logprobs, and the judge scores "
                "from them: use --judge embed (offline) or a model and server that return logprobs=True with top_logprobs "
                "(e.g. OpenAI gpt-4.1-mini, vLLM, llama.cpp's server)"
            )
        value = read_score([{tok.token: tok.logprob for tok in position.top_logprobs} for position in content],
                           [position.token for position in content])
        if self.cache is not None:
            self.cache.put(self.judge_id, question, answer, value)
        return value


def read_score(top_logprobs: Sequence[dict[str, float]], tokens: Sequence[str]) -> float | None:
    """The score from the returned tokens and their top logprobs, one table per position.

    When the first position offers multi-digit numbers (the tokenizer has them),
    it alone is read (Chen et al.). Otherwise the number is read digit by digit
    (`number_tables`).
    """
    first = top_logprobs[0] if top_logprobs else {}
    if any(len(t.strip()) > 1 and t.strip().isdigit() for t in first):
        return weighted_score(first)
    return digit_score(number_tables(top_logprobs, tokens))


def number_tables(top_logprobs: Sequence[dict[str, float]], tokens: Sequence[str]) -> dict[str, dict[str, float]]:
    """`digit_score`'s next-digit tables from one greedy completion's per-position top logprobs.

    The API shows the next-token distribution only along the tokens it returned,
    e.g. after "8" but not after "7". The digit after any first digit is taken
    to follow the distribution seen after the returned first digit, and the
    digit after "10" the one seen after the returned two digits. Where the
    completion stopped, the number ends.
    """
    def digits(table: dict[str, float], strip: bool = False) -> dict[str, float]:
        out: dict[str, float] = {}
        for token, logprob in table.items():
            text = token.strip() if strip else token
            if len(text) == 1 and text in DIGITS:
                out[text] = out.get(text, 0.0) + math.exp(logprob)
        return out

    tables = {"": digits(top_logprobs[0], strip=True)} if top_logprobs else {}
    path = ""
    for i, token in enumerate(tokens[: len(top_logprobs)]):
        text = token.strip() if i == 0 else token
        if len(text) != 1 or text not in DIGITS:
            break
        path += text
        if i + 1 < len(top_logprobs):
            tables[path] = digits(top_logprobs[i + 1])
    if len(path) >= 1 and path[:1] in tables:
        tables.update({d: tables[path[:1]] for d in DIGITS if d not in tables})
    if len(path) >= 2 and path[:2] in tables:
        tables.setdefault("10", tables[path[:2]])
    return tables


def coherence_judge(model: str, **kw: Any) -> OpenAIJudge:
    """An OpenAIJudge with the shared coherence rubric, named `<name>:coherence`."""
    name = kw.pop("name", None) or f"openai:{model}"
    return OpenAIJudge(model, COHERENCE_RUBRIC, name=f"{name}:coherence", **kw)


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """'openai:MODEL' -> ('openai', MODEL), 'local:MODEL' -> ('local', MODEL), 'embed' -> ('embed', '')."""
    text = spec.strip()
    if text == "embed":
        return "embed", ""
    kind, sep, model = text.partition(":")
    if sep and kind in ("openai", "local") and model.strip():
        return kind, model.strip()
    raise JudgeError(
        f"unknown judge {spec!r}: use 'openai:MODEL' (an OpenAI-compatible endpoint, e.g. openai:gpt-4.1-mini), "
        "'local:MODEL' (a local Hugging Face model id or folder) or 'embed' (the offline embedding judge)"
    )
