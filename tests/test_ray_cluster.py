"""personactl against a Ray head started as its own process, as the documented cluster workflow runs it.

The head (`ray start --head --block`) runs in a temporary folder with its own free port, 2 CPUs and token
authentication on: its HOME holds a token (~/.ray/auth_token), so `ray start` turns authentication on by itself, as
it does on a machine where Ray once wrote that file. The CLI runs as its own process, with the same HOME, against
`--ray 127.0.0.1:PORT`; its judge is the fake OpenAI server of tests/fake_openai.py, which the tests use to pace the
run (or hold it) so that a head or a worker can be stopped while records remain. Each head is stopped through its
own process group, never with a machine-wide `ray stop`; every wait is bounded by DEADLINE_S, so a hang fails a test
instead of holding the suite.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import torch
from fake_openai import FakeChat, serve

from personactl import PersonaVector
from personactl.cli import run
from personactl.evaluate import claim_run_dir, validate_config

DEADLINE_S = 120.0  # for any one wait: a head's start, a CLI run; only a hang gets there
RAY = Path(sys.executable).with_name("ray")
PERSONACTL = Path(sys.executable).with_name("personactl")
AUTH_ENVS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# What Ray writes when it reaches the terminal: C++ log lines, its Python log lines, worker reports, ANSI codes.
RAY_NOISE = re.compile(r"^\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\x1b\[|\(raylet\)|A worker died|InvalidAuthToken|\*\*\* SIG", re.M)
RECORDS = 2 * 3 * 4  # layers x coefficients x questions of SWEEP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE_S:g} s")
        time.sleep(0.05)


@dataclass
class Head:
    """A Ray head in its own process group: `ray start --head --block` and everything it started."""

    address: str
    home: Path  # the HOME it was started with (its ~/.ray/auth_token)
    process: subprocess.Popen
    log: Path

    def processes(self) -> list[psutil.Process]:
        """`ray start` and every process it started (the GCS, the raylet, the raylet's workers), living."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def idle_workers(self) -> list[psutil.Process]:
        """The ModelWorker actors that have loaded their model and wait for work (Ray names the process by its state)."""
        idle = []
        for proc in self.processes():
            try:
                if " ".join(proc.cmdline()).strip() == "ray::ModelWorker":
                    idle.append(proc)
            except psutil.Error:
                continue
        return idle

    def stop(self) -> None:
        """Kill this head's processes (its group, and any of them that left it) at once."""
        started = self.processes()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in started:
            try:
                proc.kill()
            except psutil.Error:
                continue
        self.process.wait(timeout=DEADLINE_S)


@contextmanager
def ray_head(folder: Path) -> Iterator[Head]:
    """A head with token authentication on, in `folder` (a short path: Ray's socket paths must fit in 107 bytes)."""
    home = folder / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(16))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in AUTH_ENVS} | {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    log = folder / "head.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                "--block",
                "--port",
                str(port),
                "--temp-dir",
                str(folder / "ray"),
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    head = Head(f"127.0.0.1:{port}", home, process, log)
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text() or process.poll() is not None, "ray start --head")
        assert process.poll() is None, log.read_text()
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_head(tmp_path_factory.mktemp("head")) as started:
        yield started


@pytest.fixture
def vector(tmp_path):
    torch.manual_seed(0)
    return PersonaVector(torch.randn(4, 48), trait="random").save(tmp_path / "v.safetensors")


def sweep_args(model_dir: Path, vector: Path, out: Path) -> list[str]:
    """A sweep of RECORDS records, one per chunk, judged by the fake OpenAI judge (2 requests a record)."""
    return [
        "sweep",
        "--model",
        str(model_dir),
        "--vector",
        str(vector),
        "--out",
        str(out),
        "--name",
        "r",
        "--layers",
        "1,2",
        "--coefs=-1,0,1",
        "--n-questions",
        "4",
        "--max-new-tokens",
        "3",
        "--batch-size",
        "1",
        "--judge",
        "openai:fake",
    ]


@contextmanager
def cli(head: Head, args: list[str], judge_url: str, tmp_path: Path, **env: str) -> Iterator[subprocess.Popen]:
    """`personactl ARGS --ray HEAD` as its own process (and process group: ended with the block, whatever happened)."""
    environ = {k: v for k, v in os.environ.items() if k not in AUTH_ENVS} | {
        "HOME": str(head.home),
        "PERSONACTL_JUDGE_BASE_URL": judge_url,
        "PERSONACTL_JUDGE_API_KEY": "x",
        "PERSONACTL_CACHE_DIR": str(tmp_path / "cache"),
        **env,
    }
    process = subprocess.Popen(
        [str(PERSONACTL), *args, "--ray", head.address, "--ray-actors", "2"],
        env=environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def records(out: Path) -> list[dict]:
    path = out / "r" / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def complete(lines: list[dict]) -> bool:
    return len(lines) == len({r["key"] for r in lines}) == RECORDS


def test_the_head_wants_a_token_and_the_one_in_home_is_sent(head, model_dir, vector, tmp_path):
    assert "Token authentication is enabled" in head.log.read_text()  # `ray start` turned it on: a token was in its HOME
    with serve(FakeChat()) as url, cli(head, sweep_args(model_dir, vector, tmp_path / "runs"), url, tmp_path) as process:
        out, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, err
    assert "Ray (127.0.0.1:" in out and "2 workers" in out
    assert not RAY_NOISE.search(out + err), err
    assert complete(records(tmp_path / "runs"))


@pytest.mark.parametrize("token", [None, "not-the-head-token"])
def test_a_missing_or_wrong_token_is_one_line_that_says_what_to_do(head, model_dir, tmp_path, capfd, monkeypatch, token):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token here
    for name in AUTH_ENVS:
        monkeypatch.delenv(name, raising=False)
    if token is not None:
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert run(["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--ray", head.address]) == 2
    out, err = capfd.readouterr()
    assert len(err.strip().splitlines()) == 1 and not out, err
    said = "no token is set here" if token is None else "refuses the token found here"
    assert err.startswith(f"error: Ray at {head.address} ") and said in err
    assert "copy the head's ~/.ray/auth_token to ~/.ray/auth_token here, or set RAY_AUTH_TOKEN" in err


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


def test_a_port_that_is_not_ray_is_one_line(model_dir, tmp_path, capfd, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("a model was loaded"))
    try:
        assert run(["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--ray", address]) == 2
    finally:
        server.shutdown()
        server.server_close()
    out, err = capfd.readouterr()
    assert err.strip() == (
        f"error: {address} answers but is not a Ray head (no gRPC there): give the head's GCS port, "
        "the one `ray start --head --port` opened (default 6379)"
    )
    assert not out


def test_another_config_on_a_run_folder_is_refused_before_ray_is_reached(head, model_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "r").mkdir()
    claim_run_dir(validate_config({"name": "r", "model": str(model_dir), "max_new_tokens": 3}), tmp_path / "r")  # a first run
    monkeypatch.setattr("personactl.scaleout.run_on_ray", lambda *a, **k: pytest.fail("Ray was reached"))
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("a model was loaded"))
    args = ["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--name", "r", "--max-new-tokens", "4", "--ray", head.address]
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'r'} holds a sweep with another config (max_new_tokens differ): use another --name/--out or delete it")


def test_a_killed_worker_is_one_line_naming_it_and_its_requeued_records(head, model_dir, vector, tmp_path):
    state = FakeChat()
    state.hold = threading.Event()  # the driver waits on its first judgement while both workers finish their chunks
    with serve(state) as url, cli(head, sweep_args(model_dir, vector, tmp_path / "runs"), url, tmp_path) as process:
        wait_for(lambda: state.in_flight >= 1 and len(head.idle_workers()) == 2, "two loaded workers and a held judge")
        victim = head.idle_workers()[0]
        victim.kill()
        victim.wait(timeout=DEADLINE_S)
        state.hold.set()
        out, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, err
    deaths = [line for line in err.splitlines() if "died" in line]
    assert len(deaths) == 1, err
    assert re.fullmatch(
        rf"Ray worker [12] of 2 \(pid {victim.pid} on [\d.]+\) died \(\w+\); re-queued records vector\|L[12]\|\S+"
        r"(, records vector\|L[12]\|\S+)*",
        deaths[0],
    ), deaths[0]
    assert not RAY_NOISE.search(out + err), err
    assert complete(records(tmp_path / "runs"))  # none lost, none twice


def test_ctrl_c_exits_130_with_the_records_kept_and_no_traceback(head, model_dir, vector, tmp_path):
    state = FakeChat()
    state.delay = 0.1  # paced, so that records are left when Ctrl-C comes
    with serve(state) as url, cli(head, sweep_args(model_dir, vector, tmp_path / "runs"), url, tmp_path) as process:
        wait_for(lambda: len(records(tmp_path / "runs")) >= 1, "a first record")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE_S)
    kept = records(tmp_path / "runs")
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [f"error: interrupted: {len(kept)} records kept, re-run the same command to resume"]
    assert 1 <= len(kept) < RECORDS and len({r["key"] for r in kept}) == len(kept)


def test_a_head_stopped_mid_run_keeps_the_records_and_says_how_to_resume(model_dir, vector, tmp_path, tmp_path_factory, capsys, monkeypatch):
    state = FakeChat()
    state.delay = 0.1
    runs = tmp_path / "runs"
    with ray_head(tmp_path_factory.mktemp("lost")) as doomed, serve(state) as url:
        with cli(doomed, sweep_args(model_dir, vector, runs), url, tmp_path, RAY_gcs_rpc_server_reconnect_timeout_s="5") as process:
            wait_for(lambda: len(records(runs)) >= 2, "two records")
            doomed.stop()  # the head's processes killed at once: its GCS port closes, the driver's raylet is gone
            out, err = process.communicate(timeout=DEADLINE_S)
    kept = records(runs)
    assert process.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    said = re.fullmatch(
        rf"error: lost the Ray cluster at {re.escape(doomed.address)} \(.+\): {len(kept)} records kept; restart the "
        r"cluster and re-run the same command to resume, or run it on this machine without Ray \(Ray's log: (\S+)\)",
        err.strip(),
    )
    assert said, err
    shutil.rmtree(Path(said[1]).parent)  # the driver's folder, kept for its log
    assert 2 <= len(kept) < RECORDS and len({r["key"] for r in kept}) == len(kept)  # whole records only
    with serve(FakeChat()) as url:  # the same command without --ray finishes the run
        monkeypatch.setenv("PERSONACTL_JUDGE_BASE_URL", url)
        monkeypatch.setenv("PERSONACTL_JUDGE_API_KEY", "x")
        monkeypatch.setenv("PERSONACTL_CACHE_DIR", str(tmp_path / "cache"))
        assert run(sweep_args(model_dir, vector, runs)) == 0
    assert complete(records(runs))
    assert [r["key"] for r in records(runs)[: len(kept)]] == [r["key"] for r in kept]
