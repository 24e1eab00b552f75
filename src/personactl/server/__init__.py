"""Serve personas: an OpenAI-compatible server with per-request steering, batched across clients, and a web page."""

from .app import create_app
from .engine import Engine, Job, QueueFull
from .personas import PersonaLibrary, PersonaRequest, UnknownPersona
from .serve import base_url, listen, running_server, serve
from .settings import ServerError, ServerSettings

__all__ = [
    "Engine",
    "Job",
    "PersonaLibrary",
    "PersonaRequest",
    "QueueFull",
    "ServerError",
    "ServerSettings",
    "UnknownPersona",
    "base_url",
    "create_app",
    "listen",
    "running_server",
    "serve",
]
