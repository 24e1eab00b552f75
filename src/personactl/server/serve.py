"""Run the app with uvicorn: in the foreground (the CLI) or on a background thread that always stops (tests, notebooks)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..models import Backbone
from .app import create_app
from .engine import Engine
from .personas import PersonaLibrary
from .settings import ServerError, ServerSettings


def _server(backbone: Backbone, settings: ServerSettings) -> tuple[object, Engine]:
    import uvicorn  # noqa: PLC0415

    settings.check()
    engine = Engine(backbone, PersonaLibrary(backbone, settings.vectors, settings.adapters), settings)
    app = create_app(engine, model_name=backbone.name)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)
    return uvicorn.Server(config), engine


def serve(backbone: Backbone, settings: ServerSettings) -> None:
    """Serve until interrupted (Ctrl-C); the engine thread stops with it."""
    server, engine = _server(backbone, settings)
    try:
        server.run()
    finally:
        engine.close()


@dataclass(frozen=True)
class Served:
    url: str  # http://host:port
    engine: Engine


@contextmanager
def running_server(backbone: Backbone, settings: ServerSettings, start_timeout: float = 30.0) -> Iterator[Served]:
    """A server on a background thread (port 0 picks a free port); stopped on exit, errors included."""
    server, engine = _server(backbone, settings)
    thread = threading.Thread(target=server.run, name="personactl-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"the server did not start on {settings.host}:{settings.port}")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Served(f"http://{settings.host}:{port}", engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.close()
