"""What a server may do: where its personas live, who may call it, and the limits on every request."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from ..errors import PersonactlError

LOOPBACK_NAMES = {"localhost"}


class ServerError(PersonactlError):
    """A server set-up that is unsafe or cannot start."""


class ServerSettings(BaseModel):
    """Every limit is a cap on what one request (or all of them together) may ask for."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    vectors: Optional[Path] = None
    adapters: Optional[Path] = None
    token: Optional[str] = None
    cors: Optional[str] = None
    max_body_bytes: int = Field(64_000, ge=1024)
    max_tokens: int = Field(512, ge=1)
    max_personas: int = Field(4, ge=1)
    queue_size: int = Field(64, ge=1)
    max_batch: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    batch_window_s: float = Field(0.01, ge=0)
    max_jobs: int = Field(2, ge=1)

    def check(self) -> "ServerSettings":
        """Refuse to listen beyond loopback without a token; refuse missing persona folders."""
        if not is_loopback(self.host) and not self.token:
            raise ServerError(f"binding {self.host} exposes the model beyond this machine: give --token T (bearer auth on every route)")
        for label, folder in (("--vectors", self.vectors), ("--adapters", self.adapters)):
            if folder is not None and not folder.is_dir():
                raise ServerError(f"{label} {folder} is not a folder")
        return self


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
