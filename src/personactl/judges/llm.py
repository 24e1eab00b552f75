"""The LLM judge: any OpenAI-compatible endpoint, scored from the answer's logprobs.

As in Chen et al.'s persona_vectors judge, the filled rubric goes out as one
user message with temperature=0 and the top-20 logprobs; the score is the
probability-weighted mean over the integer tokens 0-100 of the first answer
token (`base.weighted_score`). A served model whose tokenizer splits numbers
into digits (Qwen's, SmolLM2's) offers only 0-9 there, so the judge asks for
NUMBER_TOKENS tokens and, when the first position holds no multi-digit number,
reads the number digit by digit (`base.digit_score`): along the returned
tokens, and along every other plausible branch by a follow-up request
(`branches`); a plausible branch the server gives no way to read makes the
score None. Requests run concurrently under a semaphore, are retried with
exponential backoff on rate limits, server errors, timeouts and dropped
connections, and the scores are cached on disk when a JudgeCache is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

from ..errors import PersonactlError
from .base import COHERENCE_RUBRIC, MIN_NUMBER_MASS, TOP_LOGPROBS, digit_score, fill_rubric, unread_branches, weighted_score
from .branches import (
    Completion,
    Tables,
    after_grammar,
    continues,
    grammar_request,
    path_tables,
    prefill_request,
    whole_numbers,
)
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
                    f"{label} still failing after {max_retries + 1} attempts ({type(err).__name__}: {err}); lower the concurrency or try again later"
                ) from err
            delay = backoff * 2**attempt
            await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))
        except openai.APIStatusError as err:
            raise error(f"{label} refused the request: HTTP {err.status_code}: {_first_line(err)}") from err
    raise AssertionError("unreachable")


@dataclass
class _Session:
    """What one `ascore` call's requests share."""

    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore  # at most `concurrency` requests in flight
    probe: asyncio.Lock  # one prefill probe at a time


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
        self.follow_ups: dict[str, bool] = {}  # "prefill" / "grammar": whether this server reads branches that way
        rubric_hash = hashlib.sha256(rubric.encode()).hexdigest()[:12]
        self.judge_id = f"openai:{model}@{self.base_url or DEFAULT_BASE_URL}#{rubric_hash}#branches"  # how scores are read

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
            async with async_client(self.base_url, self.api_key, self.timeout) as client:
                session = _Session(client, asyncio.Semaphore(self.concurrency), asyncio.Lock())
                tasks = [asyncio.ensure_future(self._score_one(session, q, a)) for q, a in todo]
                try:
                    scores = await asyncio.gather(*tasks)
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    raise
            known.update(zip(todo, scores))
        return [known[pair] for pair in pairs]

    async def _score_one(self, session: _Session, question: str, answer: str) -> float | None:
        """One judgement, retried on transient failures and stored in the cache as soon as it is known."""
        prompt = fill_rubric(self.rubric, question, answer)
        first = await self._ask(session, {"messages": [{"role": "user", "content": prompt}], "max_tokens": NUMBER_TOKENS})
        if not first.tokens:
            raise JudgeError(
                f"judge {self.model!r} at {self.base_url or DEFAULT_BASE_URL} returns no logprobs, and the judge scores "
                "from them: use --judge embed (offline) or a model and server that return logprobs=True with top_logprobs "
                "(e.g. OpenAI gpt-4.1-mini, vLLM, llama.cpp's server)"
            )
        value = await self._read(session, prompt, first)
        if self.cache is not None:
            self.cache.put(self.judge_id, question, answer, value)
        return value

    async def _read(self, session: _Session, prompt: str, first: Completion) -> float | None:
        """Chen et al.'s one-token score when the first table has whole numbers; otherwise the number digit by digit,
        along `first` and along each plausible branch it did not take (None where one cannot be read)."""
        if whole_numbers(first.tables[0]):
            return weighted_score(first.tables[0])
        tables = path_tables(first)
        if sum(tables[""].values()) < MIN_NUMBER_MASS:  # no branch can bring the numbers up to the mass rule
            return None
        asked: set[str] = set()
        while todo := [prefix for prefix in unread_branches(tables) if prefix not in asked]:
            for prefix in todo:
                asked.add(prefix)
                for key, table in (await self._branch(session, prompt, first, prefix)).items():
                    tables.setdefault(key, table)
        return digit_score(tables)

    async def _branch(self, session: _Session, prompt: str, first: Completion, prefix: str) -> Tables:
        """The tables after the digits `prefix` and along their greedy continuation, by the first way this server
        allows (`branches`); {} when it allows none."""
        rest = NUMBER_TOKENS - len(prefix)
        if "prefill" not in self.follow_ups:
            async with session.probe:
                if "prefill" not in self.follow_ups:
                    probe = await self._follow_up(session, prefill_request(prompt, first.tokens[0], 1))
                    self.follow_ups["prefill"] = probe is not None and continues(probe, first)
        if self.follow_ups["prefill"]:
            answer = await self._follow_up(session, prefill_request(prompt, prefix, rest))
            return path_tables(answer, prefix) if answer is not None else {}
        if self.follow_ups.get("grammar", True):
            answer = await self._follow_up(session, grammar_request(prompt, prefix, rest))
            tables = after_grammar(answer, first, prefix) if answer is not None else None
            self.follow_ups["grammar"] = tables is not None
            return tables or {}
        return {}

    async def _follow_up(self, session: _Session, request: dict[str, Any]) -> Completion | None:
        """`_ask`, or None when the server refuses this kind of request (a 4xx other than 429)."""
        try:
            return await self._ask(session, request)
        except JudgeError as err:
            cause = err.__cause__
            if isinstance(cause, openai.APIStatusError) and 400 <= cause.status_code < 500 and cause.status_code != 429:
                return None
            raise

    async def _ask(self, session: _Session, request: dict[str, Any]) -> Completion:
        """One greedy chat completion with the top logprobs; `request` holds messages, max_tokens and extra_body."""
        async with session.semaphore:  # held through the backoff too, so a rate-limited endpoint sees fewer calls
            completion = await with_retries(
                lambda: session.client.chat.completions.create(
                    model=self.model, temperature=0, logprobs=True, top_logprobs=TOP_LOGPROBS, seed=0, **request
                ),
                f"judge {self.model!r} at {self.base_url or DEFAULT_BASE_URL}",
                self.max_retries,
                self.backoff,
            )
        if not completion.choices:
            return Completion([], [], False)
        return Completion.from_choice(completion.choices[0])


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
