"""Connecting to Ray: a local instance started (and stopped) here, a running cluster (`auto`), or an address.

An address is checked before `ray.init` touches it, in a few seconds at most, so that each way it can be wrong is
one line instead of minutes of Ray's retries: the port must answer, speak gRPC as a Ray head's GCS does (an HTTP
server or another service does not), and accept this machine's token when the head uses token authentication.

Token authentication: `ray start --head` turns it on by itself when a token exists on the head (~/.ray/auth_token,
which Ray writes, e.g. whenever a local `ray.init()` starts), but `ray.init(address=...)` sends a token only when
RAY_AUTH_MODE=token is set. So when the head asks for a token, personactl connects in token mode with the token
Ray finds here (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import PersonactlError

CONNECT_TIMEOUT_S = 3.0
DEFAULT_PORT = 6379  # Ray's GCS port
CLIENT_PORT = 10001  # Ray Client (ray://)
# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (a GCS) answers with its own SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
TOKEN_HELP = "copy the head's ~/.ray/auth_token to ~/.ray/auth_token here, or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # no usage report to the network, no prompt


class ScaleoutError(PersonactlError):
    """Ray cannot be used as asked: not installed, not reachable, not a Ray head, a token refused, a cluster lost."""


class ClusterLost(ScaleoutError):
    """The cluster went away under a run (its GCS stopped answering); the message says how it was noticed."""


class Interrupted(ScaleoutError):
    """Ctrl-C during a run on Ray: what was finished is kept (exit code 130, as a shell reports SIGINT)."""

    exit_code = 130


def import_ray() -> Any:
    """The ray module, or a one-line error that says how to install it."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
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
    host, port = host_port(text)
    if not host or (port and not port.isdigit()):
        raise ScaleoutError(f"--ray {spec!r}: use local, auto, HOST:PORT (a cluster's head, e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    return "address", text


def host_port(address: str) -> tuple[str, str]:
    """('HOST', 'PORT') of 'HOST:PORT' or 'ray://HOST:PORT'; the port is the default one for the kind when absent."""
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep:
        return address.removeprefix("ray://"), str(CLIENT_PORT if client else DEFAULT_PORT)
    return host, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address whose port does not answer within `timeout` seconds, or (a GCS address) does not speak gRPC."""
    host, port = host_port(address)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            if address.startswith("ray://") or os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
                return  # Ray Client, or a GCS behind TLS: ray.init checks them, bounded by the driver's deadline
            sock.sendall(HTTP2_PREFACE)
            head = sock.recv(9)
    except TimeoutError:
        head = b""
    except OSError as exc:
        raise ScaleoutError(
            f"cannot reach Ray at {address} within {timeout:g} s ({exc.strerror or type(exc).__name__}): start the cluster "
            "(`ray start --head` on the head node), check the address, or use --ray local"
        ) from exc
    if len(head) < 9 or head[3] != SETTINGS_FRAME:
        raise ScaleoutError(
            f"{address} answers but is not a Ray head (no gRPC there): give the head's GCS port, the one "
            f"`ray start --head --port` opened (default {DEFAULT_PORT})"
        )


def answers(address: str, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to `address` (HOST:PORT) opens within `timeout` seconds."""
    host, port = host_port(address)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def connection_env(spec: str) -> dict[str, str]:
    """Check the address `spec` names (see `check_reachable`) and what its head wants; the environment variables
    `ray.init` then needs (RAY_AUTH_MODE=token when the head asks for a token). `local` and `auto` need none."""
    kind, address = parse_address(spec)
    if kind != "address":
        return {}
    assert address is not None
    check_reachable(address)
    if address.startswith("ray://"):
        return {}
    if _accepts(address):
        return {}
    if not _has_token():
        raise ScaleoutError(f"Ray at {address} uses token authentication and no token is set here: {TOKEN_HELP}")
    with _ray_environment({"RAY_AUTH_MODE": "token"}):
        if _accepts(address):
            return {"RAY_AUTH_MODE": "token"}
    raise ScaleoutError(f"Ray at {address} refuses the token found here (token authentication): {TOKEN_HELP}")


def _accepts(address: str) -> bool:
    """Whether the GCS at `address` answers this process as it is now set (auth mode, token); False when it wants
    another token. Ray's C++ client writes a warning on file descriptor 2 for a refusal: it is silenced here."""
    import ray.exceptions  # noqa: PLC0415
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # noqa: PLC0415 - ray/_raylet.pyi lists a few of its names

    refused = getattr(ray.exceptions, "AuthenticationError", ())  # older Ray has no token authentication
    with _fd2_silenced():
        try:
            GcsClient(address=address)
        except refused:
            return False
        except Exception as exc:  # noqa: BLE001 - Ray raises RpcError and others; any of them means "not a usable GCS"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ScaleoutError(
                f"{address} speaks gRPC but is not a Ray head's GCS ({first}): give the head's GCS port, "
                f"the one `ray start --head --port` opened (default {DEFAULT_PORT})"
            ) from exc
    return True


def _has_token() -> bool:
    """Whether Ray finds a token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), read afresh."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # noqa: PLC0415 - ray/_raylet.pyi lists a few of its names

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    try:
        return bool(loader.has_token(ignore_auth_mode=True))
    finally:
        loader.reset_cache()


@contextmanager
def _ray_environment(env: dict[str, str]) -> Iterator[None]:
    """`env` set in this process for the block, then as it was (a later `ray.init` here must not inherit a remote
    head's token mode); Ray caches its config, so it is re-read, as Ray's own `_enable_token_auth` does, on entry and
    on exit."""
    if not env:
        yield
        return
    from ray._raylet import Config  # type: ignore[attr-defined]  # noqa: PLC0415 - ray/_raylet.pyi lists a few of its names

    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    Config.initialize("")
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        Config.initialize("")
        _forget_token()


def _forget_token() -> None:
    """Drop the token Ray's loader cached, so a later connection in this process reads its own environment."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # noqa: PLC0415 - ray/_raylet.pyi lists a few of its names

    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _fd2_silenced() -> Iterator[None]:
    """File descriptor 2 (where Ray's C++ core logs) to /dev/null for the block; Python's own stderr is unaffected
    when it writes elsewhere, and restored either way."""
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextmanager
def connect(spec: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected as `spec` says, for the duration of the block; a local instance started here is stopped on exit.

    Inside a block where Ray is already initialised (a test fixture, a notebook, the driver process of
    personactl.scaleout.driver), that instance is used and left running."""
    kind, address = parse_address(spec)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    with _ray_environment(connection_env(spec)):
        yield from _connected(ray, kind, spec, address, num_cpus)


def _connected(ray: Any, kind: str, spec: str, address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """The body of `connect` once the environment is set: initialise, yield, always shut down."""
    try:
        if kind == "local":
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        advice = {"local": "", "auto": "; start a cluster with `ray start --head` or use --ray local"}.get(
            kind, "; run the command on a node of the cluster, or from outside it use --ray ray://HEAD:10001"
        )
        raise ScaleoutError(f"cannot connect to Ray ({spec}): {first}{advice}") from exc
    restore = _drop_node_errors(ray)
    try:
        yield ray
    finally:
        restore()
        ray.shutdown()


def _drop_node_errors(ray: Any) -> Any:
    """Stop Ray from printing the errors its nodes publish ("A worker died or was killed ...": several lines with ANSI
    codes on stdout, whatever log_to_driver says); the pool says what matters in one line. Returns the undo."""
    worker = ray._private.worker
    original = worker.print_to_stdstream

    def printing(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    worker.print_to_stdstream = printing

    def restore() -> None:
        worker.print_to_stdstream = original

    return restore
