"""The OpenAI-compatible surface: /v1/models, /v1/chat/completions and /v1/completions, each request with an
optional `persona` (bodies in openai_requests.py).

A request with n choices (or several completion prompts) is one engine job per choice, run side by side: choice
`p * n + i` is the i-th answer to prompt p, sampled with seed `seed + p * n + i` (modulo 2**63). Usage counts each
prompt once and every choice's completion tokens, as OpenAI does. Streams send each choice's pieces as they come,
under its index.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .engine import DoneEvent, Engine, Job, TokenEvent
from .http import ApiError, job_events
from .openai_requests import MAX_CHOICES, MAX_SEED, ChatRequest, CompletionRequest, GenerationRequest
from .personas import UnknownPersona
from .tokens import TokenBytes

DEFAULT_MAX_TOKENS = 128  # per choice, when the request does not say (less when n choices would pass the server's cap)

Events = AsyncGenerator[tuple[int, TokenEvent | DoneEvent], None]  # (choice index, event)


async def _merged(engine: Engine, jobs: list[Job], request: Request) -> Events:
    """Every job's events under its choice index, in the order they come; the first error ends (and cancels) them all,
    and so does the client going away."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, job: Job) -> None:
        try:
            async for event in job_events(engine, job, request):
                queue.put_nowait((index, event))
                if isinstance(event, DoneEvent):
                    return
            queue.put_nowait((index, ApiError(499, "the client went away")))
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            queue.put_nowait((index, exc))

    tasks = [asyncio.create_task(pump(index, job)) for index, job in enumerate(jobs)]
    try:
        running = len(jobs)
        while running:
            index, event = await queue.get()
            if isinstance(event, Exception):
                raise event
            running -= isinstance(event, DoneEvent)
            yield index, event
    finally:
        for task in tasks:
            task.cancel()  # leaving job_events marks its job cancelled


def _usage(dones: dict[int, DoneEvent], n: int) -> dict:
    prompt = sum(done.prompt_tokens for index, done in dones.items() if index % n == 0)
    completion = sum(done.completion_tokens for done in dones.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _reply(events: Events, base: dict, n: int, choice: Callable[[int, list[TokenEvent], DoneEvent], dict]) -> dict:
    """The whole answer: every choice once all are done."""
    tokens: dict[int, list[TokenEvent]] = defaultdict(list)
    dones: dict[int, DoneEvent] = {}
    async with aclosing(events):
        async for index, event in events:
            if isinstance(event, DoneEvent):
                dones[index] = event
            else:
                tokens[index].append(event)
    return {**base, "choices": [choice(index, tokens[index], dones[index]) for index in sorted(dones)], "usage": _usage(dones, n)}


async def _stream(
    events: Events, base: dict, n: int, body: GenerationRequest, piece: Callable[[int, TokenEvent | DoneEvent, list[int]], dict], opening: list[dict]
) -> StreamingResponse:
    """Server-sent chunks: `opening`, then one chunk per event (`piece(index, event, the choice's token ids before it)`),
    then with stream_options.include_usage a last chunk with no choices and the usage (every other chunk has usage null)."""
    first = await anext(events)  # errors before streaming starts are plain JSON errors
    usage = {"usage": None} if body.include_usage() else {}
    metered = body.persona is not None and body.persona.meter

    async def chunks() -> AsyncIterator[dict]:
        ids: dict[int, list[int]] = defaultdict(list)
        dones: dict[int, DoneEvent] = {}
        async with aclosing(events):
            for choice in opening:
                yield {**base, "choices": [choice], **usage}
            item: tuple[int, TokenEvent | DoneEvent] | None = first
            while item is not None:
                index, event = item
                meter = {"persona_meter": event.meter} if metered and isinstance(event, TokenEvent) else {}
                yield {**base, "choices": [piece(index, event, ids[index])], **usage, **meter}
                if isinstance(event, DoneEvent):
                    dones[index] = event
                else:
                    ids[index].append(event.token_id)
                item = await anext(events, None)
        if usage:
            yield {**base, "choices": [], "usage": _usage(dones, n)}

    async def lines() -> AsyncIterator[str]:
        try:
            async for chunk in chunks():
                yield f"data: {json.dumps(chunk)}\n\n"
        except ApiError as exc:
            yield f"data: {json.dumps({'error': {'message': exc.message}})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


def openai_routes(engine: Engine, model_name: str) -> APIRouter:
    """The /v1 routes over `engine`."""
    settings, library, backbone = engine.settings, engine.library, engine.backbone
    tokenizer, token_bytes = backbone.tokenizer, TokenBytes(backbone.tokenizer)
    template_knows_tools = "tool_calls" in str(getattr(tokenizer, "chat_template", None) or "")
    router = APIRouter()

    def make_jobs(prompts: list[str], body: GenerationRequest, max_tokens: int | None, top: int | None) -> list[Job]:
        n = body.n or 1
        count = len(prompts) * n
        if count > MAX_CHOICES:
            raise ApiError(400, f"{count} choices ({len(prompts)} prompts x n={n}): at most {MAX_CHOICES} per request")
        wanted = max_tokens or max(1, min(DEFAULT_MAX_TOKENS, settings.max_tokens // count))
        if wanted * count > settings.max_tokens:
            per = f" x {count} choices" if count > 1 else ""
            raise ApiError(400, f"max_tokens {wanted}{per} is over this server's limit of {settings.max_tokens}")
        if body.persona is not None:
            try:
                library.check(body.persona, settings.max_personas, settings.max_steering)
            except UnknownPersona as exc:
                raise ApiError(400, str(exc)) from exc
        seed = secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed
        temperature = 0.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        prompts = [prompt for prompt in prompts for _ in range(n)]
        return [
            Job(
                prompt,
                wanted,
                temperature=temperature,
                top_p=top_p,
                seed=(seed + index) % (MAX_SEED + 1),
                persona=body.persona,
                top_logprobs=top,
                stop=body.stops(),
            )
            for index, prompt in enumerate(prompts)
        ]

    def chat_prompt(body: ChatRequest) -> str:
        messages = [m.for_template(template_knows_tools) for m in body.messages]
        try:
            return backbone.chat(messages)
        except jinja2.TemplateError as exc:
            roles = ", ".join(sorted({m["role"] for m in messages}))
            raise ApiError(400, f"messages: the chat template of {model_name} cannot take this conversation (roles: {roles}): {exc}") from exc

    def chat_logprobs(tokens: list[TokenEvent]) -> dict:
        def entry(token_id: int, logprob: float | None) -> dict:
            return {"token": tokenizer.decode([token_id]), "logprob": logprob, "bytes": list(token_bytes(token_id))}

        return {"content": [{**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, v) for i, v in t.top]} for t in tokens]}

    def text_offsets(ids: list[int], first: int) -> list[int]:
        """Where each of ids[first:] starts in the text decoded from ids: the length of the text before it, less a trailing
        half character (a token that completes a character starts where that character does). Text the engine holds
        back while it may begin a stop string counts: these are offsets in the final text, not in what was sent so far."""
        return [len(tokenizer.decode(ids[:k], skip_special_tokens=True).rstrip("\ufffd")) for k in range(first, len(ids))]

    def completion_logprobs(tokens: list[TokenEvent], before: list[int], end: int | None = None) -> dict:
        """Legacy log-probabilities of `tokens`, which follow the tokens `before` of the same choice. `text_offset` is
        each token's character offset in the returned text (at most `end`: tokens of a stop string, which the text
        leaves out, are placed at its end)."""
        offsets = text_offsets([*before, *(t.token_id for t in tokens)], len(before))
        return {
            "tokens": [tokenizer.decode([t.token_id]) for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{tokenizer.decode([i]): v for i, v in t.top} for t in tokens],
            "text_offset": offsets if end is None else [min(offset, end) for offset in offsets],
        }

    def completion_prompts(body: CompletionRequest) -> list[str]:
        """An empty prompt generates from the tokenizer's BOS token (as OpenAI's starts from <|endoftext|>); 400 without one."""
        for index, prompt in enumerate(body.prompt):
            if not prompt and tokenizer.bos_token is None:
                where = "prompt" if len(body.prompt) == 1 else f"prompt.{index}"
                raise ApiError(400, f"{where}: empty, and {model_name} has no BOS token to start from")
        return [prompt or tokenizer.bos_token for prompt in body.prompt]

    def base(prefix: str, kind: str) -> dict:
        return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model_name}

    @router.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "personactl"}]}

    @router.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        top = body.top()
        jobs = make_jobs([chat_prompt(body)], body, body.max_completion_tokens or body.max_tokens, top)
        events = _merged(engine, jobs, request)

        def logprobs(tokens: list[TokenEvent]) -> dict | None:
            return chat_logprobs(tokens) if top is not None else None

        if body.stream:

            def piece(index: int, event: TokenEvent | DoneEvent, _before: list[int]) -> dict:
                if isinstance(event, DoneEvent):
                    return {"index": index, "delta": {}, "logprobs": None, "finish_reason": event.finish_reason}
                return {"index": index, "delta": {"content": event.text}, "logprobs": logprobs([event]), "finish_reason": None}

            opening = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None} for i in range(len(jobs))]
            return await _stream(events, base("chatcmpl", "chat.completion.chunk"), body.n or 1, body, piece, opening)

        def choice(index: int, tokens: list[TokenEvent], done: DoneEvent) -> dict:
            return {
                "index": index,
                "message": {"role": "assistant", "content": "".join(t.text for t in tokens)},
                "logprobs": logprobs(tokens),
                "finish_reason": done.finish_reason,
            }

        return await _reply(events, base("chatcmpl", "chat.completion"), body.n or 1, choice)

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        jobs = make_jobs(completion_prompts(body), body, body.max_tokens, body.logprobs)
        events = _merged(engine, jobs, request)

        def logprobs(tokens: list[TokenEvent], before: list[int], end: int | None = None) -> dict | None:
            return completion_logprobs(tokens, before, end) if body.logprobs is not None else None

        if body.stream:

            def piece(index: int, event: TokenEvent | DoneEvent, before: list[int]) -> dict:
                if isinstance(event, DoneEvent):
                    return {"index": index, "text": "", "logprobs": None, "finish_reason": event.finish_reason}
                return {"index": index, "text": event.text, "logprobs": logprobs([event], before), "finish_reason": None}

            return await _stream(events, base("cmpl", "text_completion"), body.n or 1, body, piece, [])

        def choice(index: int, tokens: list[TokenEvent], done: DoneEvent) -> dict:
            text = "".join(t.text for t in tokens)
            return {"index": index, "text": text, "logprobs": logprobs(tokens, [], len(text)), "finish_reason": done.finish_reason}

        return await _reply(events, base("cmpl", "text_completion"), body.n or 1, choice)

    return router
