"""Run the app with uvicorn: in the foreground (the CLI) or on a background thread that always stops (tests, notebooks).

The listening socket is bound here, before uvicorn starts (and, in the CLI, before the model loads): a port in use is
one ServerError at once, and port 0 gives the real port to print.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..models import Backbone
from .app import create_app
from .engine import Engine
from .personas import PersonaLibrary
from .settings import ServerError, ServerSettings

if TYPE_CHECKING:
    import uvicorn


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free port the system picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def base_url(sock: socket.socket) -> str:
    """http://host:port of a listening socket (IPv6 addresses in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(backbone: Backbone, settings: ServerSettings) -> tuple[uvicorn.Server, Engine]:
    import uvicorn  # noqa: PLC0415

    settings.check()
    engine = Engine(backbone, PersonaLibrary(backbone, settings.vectors, settings.adapters), settings)
    app = create_app(engine, model_name=backbone.name)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)
    return uvicorn.Server(config), engine


def serve(backbone: Backbone, settings: ServerSettings, sock: socket.socket | None = None) -> None:
    """Serve on `sock` (default: bind settings.host:port) until interrupted (Ctrl-C); the engine thread stops with it."""
    sock = sock or listen(settings.host, settings.port)
    server, engine = _server(backbone, settings)
    with closing(sock):
        try:
            server.run(sockets=[sock])
        finally:
            engine.close()


@dataclass(frozen=True)
class Served:
    url: str  # http://host:port
    engine: Engine


@contextmanager
def running_server(backbone: Backbone, settings: ServerSettings, start_timeout: float = 30.0) -> Iterator[Served]:
    """A server on a background thread (port 0 picks a free port); stopped on exit, errors included."""
    sock = listen(settings.host, settings.port)
    with closing(sock):
        server, engine = _server(backbone, settings)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="personactl-server", daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + start_timeout
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise ServerError(f"the server did not start on {base_url(sock)}")
                time.sleep(0.02)
            yield Served(base_url(sock), engine)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            engine.close()
