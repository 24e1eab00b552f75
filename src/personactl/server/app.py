"""The FastAPI app: OpenAI-compatible chat and completions (streaming, logprobs) with a per-request `persona`,
the persona list, and the web page. Errors are JSON with a message, never a traceback."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from importlib import resources
from typing import Any, AsyncIterator, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ..errors import PersonactlError
from .engine import DoneEvent, Engine, ErrorEvent, Job, QueueFull, TokenEvent
from .jobs import ExtractRequest, Extractions
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


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error"}},
                        status_code=status, headers=headers)


def create_app(engine: Engine, model_name: str = "personactl") -> FastAPI:
    """The app over a running engine (the caller owns the engine and closes it)."""
    settings, library, backbone = engine.settings, engine.library, engine.backbone
    extractions = Extractions(engine, settings.max_jobs)
    app = FastAPI(title="personactl", docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("personactl") / "server" / "static"

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if settings.token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return _error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
        length = request.headers.get("content-length")
        if request.method == "POST" and (length is None or not length.isdigit()):
            return _error(411, "send the request body with a Content-Length (chunked bodies are not accepted)")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _error(413, f"request body over {settings.max_body_bytes} bytes")
        return await call_next(request)

    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware  # noqa: PLC0415

        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors], allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return _error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception):
        return _error(500, f"internal error ({type(exc).__name__})")

    def _job(prompt: str, body: _Common, top_logprobs: Optional[int], emit) -> Job:
        wanted = body.max_completion_tokens or body.max_tokens or 128
        if wanted > settings.max_tokens:
            raise ApiError(400, f"max_tokens {wanted} is over this server's limit of {settings.max_tokens}")
        if body.persona is not None:
            try:
                library.check(body.persona, settings.max_personas)
            except UnknownPersona as exc:
                raise ApiError(400, str(exc)) from exc
        return Job(prompt, wanted, emit, body.temperature, body.top_p, body.seed, body.persona, top_logprobs)

    async def _events(prompt: str, body: _Common, top_logprobs: Optional[int]) -> AsyncIterator[object]:
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job = _job(prompt, body, top_logprobs, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        try:
            engine.submit(job)
        except QueueFull as exc:
            raise ApiError(429, str(exc), {"Retry-After": "2"}) from exc
        deadline = time.monotonic() + settings.timeout_s
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError as exc:
                    raise ApiError(504, f"generation took longer than {settings.timeout_s:g} s") from exc
                if isinstance(event, ErrorEvent):
                    raise ApiError(400 if "persona" in event.message or "adapter" in event.message else 500, event.message)
                yield event
                if isinstance(event, DoneEvent):
                    return
        finally:
            job.cancelled.set()

    def _meter(body: _Common, event: TokenEvent) -> dict:
        return {"persona_meter": event.meter} if body.persona is not None and body.persona.meter else {}

    async def _collect(prompt: str, body: _Common, top_logprobs: Optional[int]) -> tuple[list[TokenEvent], DoneEvent]:
        tokens: list[TokenEvent] = []
        async for event in _events(prompt, body, top_logprobs):
            if isinstance(event, DoneEvent):
                return tokens, event
            tokens.append(event)
        raise ApiError(500, "generation ended without finishing")

    def _sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            try:
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk)}\n\n"
            except ApiError as exc:
                yield f"data: {json.dumps({'error': {'message': exc.message}})}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(lines(), media_type="text/event-stream")

    def _chat_logprobs(tokens: list[TokenEvent]) -> dict:
        entry = lambda tok, lp: {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}  # noqa: E731
        return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(s, v) for s, v in t.top]} for t in tokens]}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "personactl"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Any:
        prompt = backbone.chat([m.model_dump() for m in body.messages])
        top = (body.top_logprobs or 0) if body.logprobs else None
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": ident, "created": created, "model": model_name}
        if body.stream:
            events = _events(prompt, body, top)
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
                        choice["logprobs"] = _chat_logprobs([event])
                    yield {**base, "object": "chat.completion.chunk", "choices": [choice], **_meter(body, event)}
                    event = await events.__anext__()
            return _sse(chunks())
        tokens, done = await _collect(prompt, body, top)
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(t.text for t in tokens)}, "finish_reason": done.finish_reason,
                  "logprobs": _chat_logprobs(tokens) if top is not None else None}
        return {**base, "object": "chat.completion", "choices": [choice],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens}}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise ApiError(400, "prompt: send one prompt per request")
            body.prompt = body.prompt[0]
        top = body.logprobs
        base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_name, "object": "text_completion"}

        def logprobs(tokens: list[TokenEvent]) -> Optional[dict]:
            if top is None:
                return None
            return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                    "top_logprobs": [dict(t.top) for t in tokens], "text_offset": []}

        if body.stream:
            events = _events(body.prompt, body, top)
            first = await events.__anext__()

            async def chunks() -> AsyncIterator[dict]:
                event = first
                while True:
                    if isinstance(event, DoneEvent):
                        yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": event.finish_reason, "logprobs": None}]}
                        return
                    yield {**base, "choices": [{"index": 0, "text": event.text, "finish_reason": None, "logprobs": logprobs([event])}], **_meter(body, event)}
                    event = await events.__anext__()
            return _sse(chunks())
        tokens, done = await _collect(body.prompt, body, top)
        return {**base, "choices": [{"index": 0, "text": "".join(t.text for t in tokens), "finish_reason": done.finish_reason, "logprobs": logprobs(tokens)}],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens}}

    @app.get("/personas")
    async def personas() -> dict:
        try:
            return library.describe()
        except PersonactlError as exc:
            raise ApiError(500, str(exc)) from exc

    @app.post("/personas/extract")
    async def extract_trait(body: ExtractRequest) -> dict:
        try:
            return extractions.submit(body).to_dict()
        except QueueFull as exc:
            raise ApiError(429, str(exc), {"Retry-After": "10"}) from exc
        except UnknownPersona as exc:
            raise ApiError(409, str(exc)) from exc

    @app.get("/personas/jobs/{job}")
    async def job_state(job: str) -> dict:
        state = extractions.jobs.get(job)
        if state is None:
            raise ApiError(404, f"no extraction job '{job}'")
        return state.to_dict()

    if (static / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

        @app.get("/")
        async def page() -> FileResponse:
            return FileResponse(str(static / "index.html"))

    return app
