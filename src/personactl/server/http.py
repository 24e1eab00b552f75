"""The bridge between HTTP and the engine: JSON errors, and a request's engine events as an async stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import PersonactlError
from .engine import DoneEvent, Engine, ErrorEvent, Job, QueueFull, TokenEvent


class ApiError(Exception):
    """An error answered as OpenAI-style JSON with an HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error"}}, status_code=status, headers=headers
    )


DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there


async def job_events(engine: Engine, job: Job, request: Request | None = None) -> AsyncIterator[TokenEvent | DoneEvent]:
    """Submit `job` and yield its TokenEvents then its DoneEvent; errors become ApiError.

    Leaving early cancels the job, and so does the client going away (checked every DISCONNECT_POLL_S when
    `request` is given, streaming or not): the engine drops the row at its next step instead of computing an
    answer nobody reads.
    """
    loop, events = asyncio.get_running_loop(), asyncio.Queue[TokenEvent | DoneEvent | ErrorEvent]()

    def emit(event: TokenEvent | DoneEvent | ErrorEvent) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    job.emit = emit
    try:
        engine.submit(job)
    except QueueFull as exc:
        raise ApiError(429, str(exc), {"Retry-After": "2"}) from exc
    except PersonactlError as exc:
        raise ApiError(400, str(exc)) from exc
    timeout = engine.settings.timeout_s
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if deadline <= now:
                raise ApiError(504, f"generation took longer than {timeout:g} s")
            if request is not None and now - checked >= DISCONNECT_POLL_S:  # also while tokens flow: a stream's client may close
                checked = now
                if await request.is_disconnected():
                    return
            try:
                event = await asyncio.wait_for(events.get(), timeout=min(deadline - now, DISCONNECT_POLL_S))
            except asyncio.TimeoutError:
                continue
            if isinstance(event, ErrorEvent):
                raise ApiError(event.status, event.message)
            yield event
            if isinstance(event, DoneEvent):
                return
    finally:
        job.cancelled.set()


async def collect(engine: Engine, job: Job, request: Request | None = None) -> tuple[list[TokenEvent], DoneEvent]:
    """A whole generation: its tokens and how it ended (cancelled if the client of `request` goes away)."""
    tokens: list[TokenEvent] = []
    async for event in job_events(engine, job, request):
        if isinstance(event, DoneEvent):
            return tokens, event
        tokens.append(event)
    raise ApiError(500, "generation ended without finishing")
