"""What a server may do: where its personas live, who may call it, and the limits on every request."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import PersonactlError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_TOKEN = 16  # characters: a bearer token shorter than this is guessable


class ServerError(PersonactlError):
    """A server set-up that is unsafe or cannot start."""


class ServerSettings(BaseModel):
    """Every limit is a cap on what one request (or all of them together) may ask for."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    vectors: Path | None = None
    adapters: Path | None = None
    token: str | None = Field(None, description=f"bearer token ({MIN_TOKEN}+ characters) for every route but the page")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted besides the loopback names "
        "(a loopback server refuses others: DNS rebinding); when given, a server beyond loopback checks them too",
    )
    cors: str | None = None
    max_body_bytes: int = Field(64_000, ge=1024)
    max_tokens: int = Field(512, ge=1)
    max_personas: int = Field(4, ge=1)
    max_steering: float = Field(
        50.0,
        gt=0,
        description="largest summed |coef| of one request's vectors at any one layer; "
        "50 is one vector at its own cap, so listing vectors several times cannot steer harder",
    )
    queue_size: int = Field(64, ge=1)
    max_batch: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    batch_window_s: float = Field(0.01, ge=0)
    max_jobs: int = Field(2, ge=1)
    max_prompt_tokens: int = Field(4096, ge=1)  # also capped by the model's context
    scheduling: Literal["continuous", "static"] = "continuous"  # static: a batch runs to its end before others join (benchmarks)
    max_extract_answers: int = Field(60, ge=2)  # instruction pairs x questions in one custom-trait extraction
    max_custom_vectors: int = Field(16, ge=1)  # custom traits this server may write into --vectors

    def check(self) -> ServerSettings:
        """Refuse to listen beyond loopback without a token, a short token, and missing persona folders."""
        if not is_loopback(self.host) and not self.token:
            raise ServerError(f"binding {self.host} exposes the model beyond this machine: give --token T (bearer auth on every route)")
        if self.token is not None and len(self.token) < MIN_TOKEN:
            raise ServerError(f"the token has {len(self.token)} characters: use at least {MIN_TOKEN} (or --token auto to generate one)")
        for label, folder in (("--vectors", self.vectors), ("--adapters", self.adapters)):
            if folder is not None and not folder.is_dir():
                raise ServerError(f"{label} {folder} is not a folder")
        return self


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
