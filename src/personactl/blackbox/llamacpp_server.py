"""llama-cpp-python's OpenAI-compatible server for a GGUF model, started and always stopped by a context manager.

It gives `--backend openai:MODEL` and `--judge openai:MODEL` a real local
endpoint (tests, experiments, or a user without an API key). The server binds
127.0.0.1 on a free port; its output goes to a log file, never a pipe (a pipe
nobody reads fills up and stalls the server).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PersonactlError


class ServerStartError(PersonactlError):
    """llama_cpp.server exited or did not answer in time."""


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def llamacpp_server(model: str | Path, log: Path, *, n_ctx: int = 2048, threads: int = 2, timeout: float = 120.0) -> Iterator[str]:
    """Serve the GGUF file `model`; yields its /v1 base URL; the server is terminated on exit, errors included."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError as err:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ServerStartError(f"llama_cpp.server did not start (log {log}): {log.read_text(errors='replace')[-500:]}") from err
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
