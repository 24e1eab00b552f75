"""The persona server."""

from __future__ import annotations

import secrets
from contextlib import closing
from pathlib import Path

import typer

from ..errors import OptionError
from . import _common
from ._common import DeviceOpt, ModelOpt, app, out


@app.command()
def serve(
    model: str = ModelOpt,
    host: str = typer.Option("127.0.0.1", help="address to bind; anything beyond loopback requires --token"),
    port: int = typer.Option(8000, help="TCP port (0: any free port; the real one is printed)"),
    vectors: Path | None = typer.Option(None, help="folder of persona vectors (NAME.safetensors), usable by name"),
    adapters: Path | None = typer.Option(None, help="folder of persona adapters (see `adapter train`), usable by name"),
    token: str | None = typer.Option(
        None,
        envvar="PERSONACTL_TOKEN",
        help="bearer token (16+ characters) required on every route but the web page; 'auto' generates one and prints it",
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="also accept requests whose Host header is this name "
        "(repeatable; a loopback server otherwise accepts only localhost, 127.0.0.1 and [::1])",
    ),
    cors: str | None = typer.Option(None, help="allow this browser origin (CORS is off without it)"),
    max_tokens: int = typer.Option(512, help="largest max_tokens a request may ask for"),
    queue_size: int = typer.Option(64, help="requests that may wait; more get 429 with Retry-After"),
    max_batch: int = typer.Option(16, help="requests batched into one forward pass"),
    timeout: float = typer.Option(120.0, help="seconds a generation may take"),
    device: str | None = DeviceOpt,
) -> None:
    """OpenAI-compatible server (chat, completions, streaming, logprobs) with per-request personas, and a web page at /."""
    from pydantic import ValidationError  # noqa: PLC0415

    from ..errors import first_validation_error  # noqa: PLC0415
    from ..server import ServerSettings, base_url, listen  # noqa: PLC0415
    from ..server import serve as run_server

    generated = token == "auto"
    try:
        settings = ServerSettings(
            host=host,
            port=port,
            vectors=vectors,
            adapters=adapters,
            token=secrets.token_urlsafe(24) if generated else token,
            allowed_hosts=allow_host,
            cors=cors,
            max_tokens=max_tokens,
            queue_size=queue_size,
            max_batch=max_batch,
            timeout_s=timeout,
        )
    except ValidationError as exc:
        raise OptionError(f"serve {first_validation_error(exc, 'serve')}") from exc
    settings.check()
    with closing(listen(settings.host, settings.port)) as sock:  # bound before loading: a busy port fails at once
        backbone = _common._load(model, device, None, None)
        url = base_url(sock)
        out.print(f"serving {backbone.name} on {url} (OpenAI base URL {url}/v1; page at /); Ctrl-C stops", highlight=False)
        if generated:
            out.print(f"token: {settings.token}", highlight=False)
        run_server(backbone, settings, sock)
