"""The OpenAI-compatible surface: /v1/models, /v1/chat/completions and /v1/completions (streaming, logprobs),
each request with an optional `persona`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Literal, Optional, Union

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from .engine import DoneEvent, Engine, Job, TokenEvent
from .http import ApiError, collect, job_events
from .personas import PersonaRequest, UnknownPersona


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class _Common(BaseModel):
    model: str = "personactl"
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    stream: bool = False
    persona: Optional[PersonaRequest] = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class CompletionRequest(_Common):
    prompt: Union[str, list[str]]
    logprobs: Optional[int] = Field(None, ge=0, le=20)


def _sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
        except ApiError as exc:
            yield f"data: {json.dumps({'error': {'message': exc.message}})}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(lines(), media_type="text/event-stream")


def openai_routes(engine: Engine, model_name: str) -> APIRouter:
    """The /v1 routes over `engine`."""
    settings, library, backbone = engine.settings, engine.library, engine.backbone
    router = APIRouter()

    def make_job(prompt: str, body: _Common, top_logprobs: Optional[int]) -> Job:
        wanted = body.max_completion_tokens or body.max_tokens or 128
        if wanted > settings.max_tokens:
            raise ApiError(400, f"max_tokens {wanted} is over this server's limit of {settings.max_tokens}")
        if body.persona is not None:
            try:
                library.check(body.persona, settings.max_personas)
            except UnknownPersona as exc:
                raise ApiError(400, str(exc)) from exc
        return Job(prompt, wanted, temperature=body.temperature, top_p=body.top_p, seed=body.seed, persona=body.persona,
                   top_logprobs=top_logprobs)

    def meter(body: _Common, event: TokenEvent) -> dict:
        return {"persona_meter": event.meter} if body.persona is not None and body.persona.meter else {}

    def token(event: TokenEvent) -> str:
        return backbone.tokenizer.decode([event.token_id])

    def chat_logprobs(tokens: list[TokenEvent]) -> dict:
        decode = backbone.tokenizer.decode
        entry = lambda tok, lp: {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}  # noqa: E731
        return {"content": [{**entry(token(t), t.logprob), "top_logprobs": [entry(decode([i]), v) for i, v in t.top]} for t in tokens]}

    @router.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "personactl"}]}

    @router.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        prompt = backbone.chat([m.model_dump() for m in body.messages])
        top = (body.top_logprobs or 0) if body.logprobs else None
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": ident, "created": created, "model": model_name}
        if body.stream:
            events = job_events(engine, make_job(prompt, body, top))
            first = await events.__anext__()  # errors before streaming starts are plain JSON errors

            async def chunks() -> AsyncIterator[dict]:
                yield {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
                event = first
                while True:
                    if isinstance(event, DoneEvent):
                        yield {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": event.finish_reason}]}
                        return
                    choice = {"index": 0, "delta": {"content": event.text}, "finish_reason": None}
                    if top is not None:
                        choice["logprobs"] = chat_logprobs([event])
                    yield {**base, "object": "chat.completion.chunk", "choices": [choice], **meter(body, event)}
                    event = await events.__anext__()
            return _sse(chunks())
        tokens, done = await collect(engine, make_job(prompt, body, top))
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(t.text for t in tokens)}, "finish_reason": done.finish_reason,
                  "logprobs": chat_logprobs(tokens) if top is not None else None}
        return {**base, "object": "chat.completion", "choices": [choice],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens}}

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise ApiError(400, "prompt: send one prompt per request")
            body.prompt = body.prompt[0]
        top = body.logprobs
        base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_name, "object": "text_completion"}
        decode = backbone.tokenizer.decode

        def logprobs(tokens: list[TokenEvent]) -> Optional[dict]:
            if top is None:
                return None
            return {"tokens": [token(t) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                    "top_logprobs": [{decode([i]): v for i, v in t.top} for t in tokens], "text_offset": []}

        if body.stream:
            events = job_events(engine, make_job(body.prompt, body, top))
            first = await events.__anext__()

            async def chunks() -> AsyncIterator[dict]:
                event = first
                while True:
                    if isinstance(event, DoneEvent):
                        yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": event.finish_reason, "logprobs": None}]}
                        return
                    yield {**base, "choices": [{"index": 0, "text": event.text, "finish_reason": None, "logprobs": logprobs([event])}], **meter(body, event)}
                    event = await events.__anext__()
            return _sse(chunks())
        tokens, done = await collect(engine, make_job(body.prompt, body, top))
        return {**base, "choices": [{"index": 0, "text": "".join(t.text for t in tokens), "finish_reason": done.finish_reason, "logprobs": logprobs(tokens)}],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens}}

    return router
