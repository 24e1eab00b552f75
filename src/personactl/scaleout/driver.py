"""A command's Ray part, run here or, against a running cluster, in a child process that this one watches.

Ray ends a driver whose cluster goes away in ways Python cannot catch: its C++ core exits the process when the
node's raylet stops (`ray stop` on the head), and a driver whose head was killed can wait for it with no end. So
against a cluster (an address or `auto`), the command's Ray part (`job`: a picklable callable that connects with
`ray_pool`) runs in a child process, and this process:

- checks the address first (personactl.scaleout.cluster: it answers, it is a Ray head, it takes the token here);
- gives the child CONNECT_DEADLINE_S to connect;
- watches the head's GCS port while the child runs: closed for as long as Ray itself waits for a lost GCS
  (RAY_gcs_rpc_server_reconnect_timeout_s, 60 s by default) means the cluster is lost, and the child is ended;
- passes Ctrl-C on to the child, which stops its run and keeps what is finished;
- ends as the child did: done, the child's PersonactlError, `Interrupted` (exit 130), or, when the child ended
  without saying how (Ray's hard exit, a lost head), one line saying the cluster was lost, what was kept and how
  to resume.

In the child, file descriptor 2, where Ray's C++ core logs (retries, the raylet's death), goes to a log file that
the error line names when a run ends badly; Python's stderr, where personactl writes its lines and bars, stays the
terminal.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_path
from ..errors import PersonactlError
from .cluster import ClusterLost, Interrupted, ScaleoutError, answers, connect, connection_env, host_port, import_ray, parse_address

CONNECT_DEADLINE_S = 60.0  # for the child to start and connect (the address itself was checked in seconds)
POLL_S = 0.2  # how often the child is looked at
GCS_CHECK_S = 2.0  # how often the head's GCS port is tried while the child runs
JOB, CONNECTED, OUTCOME, LOG = "job.pkl", "connected", "outcome.pkl", "ray-driver.log"


@dataclass
class Ending:
    """What a run on Ray that ends early tells the user: `kept()` what stays ("8 records kept"), `resume` how to go on."""

    kept: Callable[[], str]
    resume: str = "re-run the same command to resume"

    def interrupted(self) -> Interrupted:
        return Interrupted(f"interrupted: {self.kept()}, {self.resume}")

    def lost(self, spec: str, why: str, log: Path | None = None) -> ScaleoutError:
        return ScaleoutError(
            f"lost the Ray cluster at {spec} ({why}): {self.kept()}; restart the cluster and {self.resume}, "
            "or run it on this machine without Ray" + (f" (Ray's log: {log})" if log else "")
        )


def run_on_ray(spec: str, job: Callable[[], None], ending: Ending) -> None:
    """Run `job`, which works on the Ray that `spec` names: here for `local` (or a Ray already initialised in this
    process), in a watched child process for a cluster (see the module's docstring)."""
    kind, _ = parse_address(spec)
    ray = import_ray()
    env = connection_env(spec)  # a wrong address, a port that is not Ray, a refused token: one line, in seconds
    if kind == "local" or ray.is_initialized():
        try:
            job()
        except KeyboardInterrupt:
            raise ending.interrupted() from None
        except ClusterLost as exc:
            raise ending.lost(spec, str(exc)) from exc
        return
    folder = Path(tempfile.mkdtemp(prefix="personactl-ray-"))
    (folder / JOB).write_bytes(pickle.dumps((spec, job)))
    main = f"import sys; from {__name__} import child_main; child_main(sys.argv[1])"
    child = subprocess.Popen([sys.executable, "-c", main, str(folder)], env={**os.environ, **env})
    try:
        with _forwarding_sigint(child):
            lost = _watch(child, folder, spec)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if not (folder / OUTCOME).exists():
        raise ending.lost(spec, lost or _exit_reason(child.returncode), folder / LOG)
    outcome = pickle.loads((folder / OUTCOME).read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    if outcome == "interrupted":
        raise ending.interrupted()
    if outcome == "crashed":
        raise SystemExit(1)  # a bug: the child printed its traceback
    if isinstance(outcome, ClusterLost):
        raise ending.lost(spec, str(outcome), folder / LOG)
    if isinstance(outcome, BaseException):
        raise outcome


def _watch(child: subprocess.Popen, folder: Path, spec: str) -> str | None:
    """Wait for the child to end; why the cluster counts as lost when this process had to end it, else None."""
    started = time.monotonic()
    patience = float(os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", "60"))
    checked, silent_since = started, None
    while True:
        try:
            child.wait(POLL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        gcs = (folder / CONNECTED).read_text() if (folder / CONNECTED).exists() else None
        if gcs is None:
            if now - started > CONNECT_DEADLINE_S:
                raise ScaleoutError(
                    f"Ray at {spec} did not take the driver within {CONNECT_DEADLINE_S:g} s: check the cluster "
                    f"(`ray status` on the head; Ray's log: {folder / LOG})"
                )
            continue
        if now - checked < GCS_CHECK_S:
            continue
        checked = now
        if answers(gcs):
            silent_since = None
        elif silent_since is None:
            silent_since = now
        elif now - silent_since > patience:
            return f"its GCS at {gcs} stopped answering for {patience:g} s"


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"its driver was killed by {signal.Signals(-returncode).name}"
    return f"Ray ended its driver with exit code {returncode}: the head or this node's raylet stopped"


@contextmanager
def _forwarding_sigint(child: subprocess.Popen) -> Iterator[None]:
    """Ctrl-C in this process is passed on to the child (a terminal sends it to both; the child acts on the first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: child.send_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def child_main(folder_name: str) -> None:
    """The driver process: connect, mark the GCS address to watch, run the job, and write how it ended."""
    folder = Path(folder_name)
    _split_stderr(folder / LOG)
    signal.signal(signal.SIGINT, _interrupt_once)
    outcome: Any = None
    try:
        spec, job = pickle.loads((folder / JOB).read_bytes())
        with connect(spec) as ray:
            _write(folder / CONNECTED, _gcs_address(ray, spec).encode())
            job()
    except KeyboardInterrupt:
        outcome = "interrupted"
    except (PersonactlError, OSError, SystemExit) as exc:
        outcome = _portable(exc)
    except Exception:  # noqa: BLE001 - a bug: its traceback goes to the terminal, the parent exits 1
        traceback.print_exc()
        outcome = "crashed"
    _write(folder / OUTCOME, pickle.dumps(outcome))
    sys.stderr.flush()
    sys.stderr = sys.__stderr__  # what the interpreter says while it shuts down (finalizers after a Ctrl-C) goes to the log


def _split_stderr(log: Path) -> None:
    """File descriptor 2 to `log`, for Ray's C++ core; Python's stderr on a copy of the old descriptor (the terminal)."""
    terminal = os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors)  # noqa: SIM115


def _interrupt_once(signum: int, frame: Any) -> None:
    """The first Ctrl-C stops the run; later ones (the parent passes the terminal's on) must not cut its cleanup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _gcs_address(ray: Any, spec: str) -> str:
    """The address whose silence means the cluster is gone: the GCS, or the Ray Client server for ray://."""
    if spec.startswith("ray://"):
        return ":".join(host_port(spec))
    return str(ray.get_runtime_context().gcs_address)


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a PersonactlError with its message and exit code."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - an exception class with its own constructor arguments
        plain = PersonactlError(str(exc))
        plain.exit_code = getattr(exc, "exit_code", 2)
        return plain


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
