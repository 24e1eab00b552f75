"""Who may call the server and how big a request may be: checked before any route runs."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request

from .http import error_response
from .settings import ServerSettings


def add_guard(app: FastAPI, settings: ServerSettings) -> None:
    """Bearer token (when set) and body-size limits on every request."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if settings.token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return error_response(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
        length = request.headers.get("content-length")
        if request.method == "POST" and (length is None or not length.isdigit()):
            return error_response(411, "send the request body with a Content-Length (chunked bodies are not accepted)")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(413, f"request body over {settings.max_body_bytes} bytes")
        return await call_next(request)

    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware  # noqa: PLC0415

        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors], allow_methods=["GET", "POST"], allow_headers=["*"])
