"""Generation through an OpenAI-compatible endpoint: llama.cpp's server, vLLM, any chat-completions API.

`ApiGenerator.chat` sends one chat-completions request per row, concurrently
under a semaphore (as the LLM judge does), with the judge's client and retry
policy (`judges.llm.async_client`, `with_retries`) and the row's own `seed`, so
a server that honours seeds (llama.cpp, vLLM) reproduces a row whatever else
is in flight. Each row carries its own `Sampling` (temperature, top_p,
repetition penalty, max tokens): parameter modulation sends different values
per coefficient in one call.

The base URL and key come from the environment: PERSONACTL_API_BASE_URL /
PERSONACTL_API_KEY first, then OPENAI_BASE_URL / OPENAI_API_KEY (a local
server that needs no key accepts any non-empty value). The repetition penalty
is not an OpenAI parameter: it is sent in the request body as
`repetition_penalty` (vLLM) and `repeat_penalty` (llama.cpp; whose default is
1.1, so 1.0 is always sent explicitly); OpenAI's own API may refuse them.

`parse_backend` reads the `--backend` option: `hf` (the local Hugging Face
model, default), `llamacpp` (llama-cpp-python in process) or `openai:MODEL`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, cast

from ..backends import BackendError, parse_backend
from ..judges.llm import DEFAULT_BASE_URL, _env, async_client, with_retries
from ..models import Message

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

BASE_URL_ENVS = ("PERSONACTL_API_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENVS = ("PERSONACTL_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class Sampling:
    """What one request asks of the sampler."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_tokens: int = 48

    def describe(self) -> str:
        return f"temperature {self.temperature:.3g}, top_p {self.top_p:.3g}, repetition_penalty {self.repetition_penalty:.3g}"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class ApiGenerator:
    """Chat answers from `model` at an OpenAI-compatible endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 300,
    ) -> None:
        api_key = api_key or _env(API_KEY_ENVS)
        if not api_key:
            raise BackendError(
                f"no API key for the model {model!r}: set PERSONACTL_API_KEY (or OPENAI_API_KEY); "
                "a local server that needs no key accepts any non-empty value"
            )
        if concurrency < 1:
            raise BackendError(f"API concurrency must be at least 1, got {concurrency}")
        self.model = model
        self.base_url = base_url or _env(BASE_URL_ENVS)
        self.api_key = api_key
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout

    @classmethod
    def from_backend(cls, spec: str, **kw: object) -> ApiGenerator:
        kind, model = parse_backend(spec)
        if kind != "openai":
            raise BackendError(f"backend {spec!r} is not an API: use --backend openai:MODEL")
        return cls(model, **kw)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"ApiGenerator({self.model!r}, base_url={self.base_url or DEFAULT_BASE_URL!r})"

    def chat(
        self, conversations: Sequence[Sequence[Message]], sampling: Sampling | Sequence[Sampling], seeds: Sequence[int] | None = None
    ) -> list[str]:
        """One answer per conversation (blocking); `sampling` is shared or one per row, `seeds` one per row."""
        rows = [sampling] * len(conversations) if isinstance(sampling, Sampling) else list(sampling)
        seeds = list(seeds) if seeds is not None else list(range(len(conversations)))
        if not len(rows) == len(seeds) == len(conversations):
            raise BackendError(f"{len(conversations)} conversations, {len(rows)} samplings and {len(seeds)} seeds")
        job = self.achat(conversations, rows, seeds)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(job)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, job).result()

    async def achat(self, conversations: Sequence[Sequence[Message]], samplings: Sequence[Sampling], seeds: Sequence[int]) -> list[str]:
        semaphore = asyncio.Semaphore(self.concurrency)
        async with async_client(self.base_url, self.api_key, self.timeout) as client:
            tasks = [
                asyncio.ensure_future(self._one(client, semaphore, list(c), s, int(seed))) for c, s, seed in zip(conversations, samplings, seeds)
            ]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise

    async def _one(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, messages: list[Message], s: Sampling, seed: int) -> str:
        label = f"model {self.model!r} at {self.base_url or DEFAULT_BASE_URL}"
        async with semaphore:
            completion = await with_retries(
                lambda: client.chat.completions.create(
                    model=self.model,
                    messages=cast("list[ChatCompletionMessageParam]", messages),  # role/content dicts, typed by role in the SDK
                    max_tokens=s.max_tokens,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    seed=seed,
                    extra_body={"repetition_penalty": s.repetition_penalty, "repeat_penalty": s.repetition_penalty},
                ),
                label,
                self.max_retries,
                self.backoff,
                BackendError,
            )
        if not completion.choices:
            raise BackendError(f"{label} returned no choices")
        return (completion.choices[0].message.content or "").strip()
