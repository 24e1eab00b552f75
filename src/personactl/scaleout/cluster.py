"""Connecting to Ray: a local instance started (and stopped) here, a running cluster (`auto`), or an address.

An address is checked with a plain TCP connection first (a few seconds), so an
unreachable cluster is a one-line error instead of a hang.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import PersonactlError

CONNECT_TIMEOUT_S = 3.0
DEFAULT_PORT = 6379  # Ray's GCS port
CLIENT_PORT = 10001  # Ray Client (ray://)


class ScaleoutError(PersonactlError):
    """Ray cannot be used as asked: not installed, not reachable, or a chunk that keeps failing."""


def import_ray() -> Any:
    """The ray module, or a one-line error that says how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to the network, no prompt
    try:
        import ray  # noqa: PLC0415
    except ImportError as exc:
        raise ScaleoutError("--ray needs Ray: pip install 'personactl[ray]' (or pip install 'ray[default]')") from exc
    return ray


def parse_address(spec: str) -> tuple[str, str | None]:
    """'local' -> ('local', None), 'auto' -> ('auto', 'auto'), 'HOST[:PORT]' or 'ray://HOST[:PORT]' -> ('address', spec)."""
    text = spec.strip()
    if text in ("local", "auto"):
        return text, None if text == "local" else "auto"
    host, port = _host_port(text)
    if not host or (port and not port.isdigit()):
        raise ScaleoutError(f"--ray {spec!r}: use local, auto, HOST:PORT (a cluster's head, e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    return "address", text


def _host_port(address: str) -> tuple[str, str]:
    """('HOST', 'PORT') of 'HOST:PORT' or 'ray://HOST:PORT'; the port is the default one for the kind when absent."""
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep:
        return address.removeprefix("ray://"), str(CLIENT_PORT if client else DEFAULT_PORT)
    return host, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address whose port does not answer within `timeout` seconds."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        raise ScaleoutError(
            f"cannot reach Ray at {address} within {timeout:g} s ({exc.strerror or type(exc).__name__}): start the cluster "
            "(`ray start --head` on the head node), check the address, or use --ray local"
        ) from exc


@contextmanager
def connect(spec: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected as `spec` says, for the duration of the block; a local instance started here is stopped on exit.

    Inside a block where Ray is already initialised (a test fixture, a notebook), that instance is used and left running."""
    kind, address = parse_address(spec)
    if kind == "address":
        check_reachable(address)  # type: ignore[arg-type]
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if kind == "local":
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScaleoutError(f"cannot connect to Ray ({spec}): {first}; start a cluster with `ray start --head` or use --ray local") from exc
    try:
        yield ray
    finally:
        ray.shutdown()
