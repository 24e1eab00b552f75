"""Who may call the server and how big a request may be: checked before any route runs."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .http import error_response
from .settings import ServerSettings, is_loopback


def host_name(header: str) -> str:
    """The name in a Host header, without its port: 'localhost:8000' -> 'localhost', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0] if header.count(":") == 1 else header


def host_allowed(header: str, settings: ServerSettings) -> bool:
    """Whether a request's Host header names this server (the defence against DNS rebinding).

    Bound to loopback, only loopback names (localhost, 127.0.0.1, [::1], any port) and `allowed_hosts` pass: a web
    page whose own domain was re-pointed at 127.0.0.1 sends its own name and is refused. Bound beyond loopback
    (which needs a token, and a browser page cannot read the token), any host passes unless `allowed_hosts` is given.
    """
    name = host_name(header)
    if is_loopback(name) or name in {h.lower() for h in settings.allowed_hosts}:
        return True
    return not is_loopback(settings.host) and not settings.allowed_hosts


def authorized(header: str, token: str) -> bool:
    """'Bearer <token>' with the scheme in any case, compared in constant time."""
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def is_page(request: Request) -> bool:
    """The web page and its static files: public, so a browser can reach the page's token field."""
    path = request.url.path
    return request.method in ("GET", "HEAD") and (path == "/" or path.startswith("/static/"))


def refusal(request: Request, settings: ServerSettings) -> JSONResponse | None:
    """Why `request` may not reach a route (its error response), or None: Host, token, body size."""
    host = request.headers.get("host", "")
    if not host_allowed(host, settings):
        allowed = ", ".join(["localhost", "127.0.0.1", "[::1]", *settings.allowed_hosts])
        return error_response(400, f"Host '{host[:100]}' is not this server's name (accepted: {allowed}; add names with --allow-host)")
    if settings.token and not is_page(request) and not authorized(request.headers.get("authorization", ""), settings.token):
        return error_response(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    length = request.headers.get("content-length")
    if request.method == "POST" and (length is None or not length.isdigit()):
        return error_response(411, "send the request body with a Content-Length (chunked bodies are not accepted)")
    if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
        return error_response(413, f"request body over {settings.max_body_bytes} bytes")
    return None


class Guard:
    """The checks of `refusal` as plain ASGI middleware.

    Not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps `receive`, and the route then never
    sees the client disconnect, so an abandoned request would be generated to its end.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = refusal(Request(scope), self.settings)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def add_guard(app: FastAPI, settings: ServerSettings) -> None:
    """Host check, bearer token (when set; everything but the page) and body-size limits on every request."""
    app.add_middleware(Guard, settings=settings)

    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware  # noqa: PLC0415

        app.add_middleware(CORSMiddleware, allow_origins=[settings.cors], allow_methods=["GET", "POST", "DELETE"], allow_headers=["*"])
