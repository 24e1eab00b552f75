"""Sweeps on a local Ray (2 CPUs, started and stopped by the fixture): the same records as one process, no record lost
or written twice when an actor is killed, resumable across --ray and no --ray, and one-line errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import ray
import torch

from personactl import PersonaVector
from personactl.cli import run
from personactl.errors import PersonactlError
from personactl.evaluate import SweepConfig, run_sweep
from personactl.judges.base import Judges
from personactl.judges.text import RepetitionCoherenceJudge
from personactl.methods import MethodContext, VectorMethod
from personactl.models import load_model
from personactl.scaleout import Ending, Interrupted, PoolSettings, RayRunner, ScaleoutError, WorkerPool, driver, parse_address, run_on_ray
from personactl.scaleout.cluster import check_reachable
from personactl.scaleout.tasks import describe_group
from personactl.traits import load_trait


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module's tests, shut down (ports closed) however they end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's task functions, for the workers
    try:
        yield ray
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


class LengthJudge:
    name = "length"

    def score(self, questions, answers):
        return [min(100.0, 10.0 * len(a)) for a in answers]


CONFIG = SweepConfig(name="r", methods=["vector"], layers=[1, 2], coefs=[-1.0, 0.0, 1.0], n_questions=4, max_new_tokens=4, batch_size=4)


def _sweep(model_dir, run_dir, runner_for=None, judges=None):
    backbone = load_model(str(model_dir))
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size))
    trait = load_trait("pirate")
    ctx = MethodContext(backbone, trait, vector, CONFIG.generation())
    questions = trait.eval_questions[: CONFIG.n_questions]
    runner = runner_for(ctx, questions) if runner_for else None
    return run_sweep(
        CONFIG, backbone, [VectorMethod(ctx)], [1, 2], questions, judges or Judges(LengthJudge(), RepetitionCoherenceJudge()), run_dir, runner
    )


@pytest.fixture
def pool(local_ray, model_dir):
    """Two workers with the tiny model (both CPUs), ended after the test so the next one can place its own."""
    with WorkerPool(PoolSettings(str(model_dir), actors=2)) as workers:
        yield workers


def _by_key(records):
    return {r["key"]: (r["answer"], r["trait"], r["coherence"], r["n_tokens"]) for r in records}


class KillingRunner(RayRunner):
    """A RayRunner that kills one actor once the first group is back, while it still holds queued groups."""

    def run(self, groups):
        for i, item in enumerate(super().run(groups)):
            if i == 0:
                ray.kill(self.pool.actors[0], no_restart=True)
            yield item


def test_ray_sweep_gives_the_single_process_records(pool, model_dir, tmp_path):
    assert pool.threads == 1  # 2 CPUs shared by 2 actors: no oversubscription
    alone = _sweep(model_dir, tmp_path / "alone")
    spread = _sweep(model_dir, tmp_path / "ray", lambda ctx, qs: RayRunner(pool, ctx, ["vector"], qs, CONFIG.seed))
    assert len(alone) == 2 * 3 * 4
    assert _by_key(spread) == _by_key(alone)


def test_a_killed_actor_loses_no_record_and_writes_none_twice(local_ray, model_dir, tmp_path, capsys):
    alone = _sweep(model_dir, tmp_path / "alone")
    with WorkerPool(PoolSettings(str(model_dir), actors=2)) as doomed:
        doomed.ready()  # killed after it said where it runs: the message names its pid and node
        killed = _sweep(model_dir, tmp_path / "killed", lambda ctx, qs: KillingRunner(doomed, ctx, ["vector"], qs, CONFIG.seed))
        assert doomed.actors[0] is None and doomed.actors[1] is not None  # the kill happened, the survivor took the rest
    lines = [json.loads(line) for line in (tmp_path / "killed" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len({r["key"] for r in lines}) == len(alone)  # none lost, none twice
    assert _by_key(lines) == _by_key(killed) == _by_key(alone)
    said = capsys.readouterr().err.strip().splitlines()  # one line for the death, naming the worker and what it held
    assert len(said) == 1 and re.fullmatch(
        r"Ray worker 1 of 2 \(pid \d+ on [\d.]+\) died \(\w+\); re-queued records vector\|L\d\S+ "
        r"\.\. \S+ \(4\)(, records \S+ \.\. \S+ \(\d\))*",
        said[0],
    ), said


def test_the_llm_judge_has_one_rate_limit_for_the_whole_run(pool, model_dir, tmp_path):
    from fake_openai import FakeChat, serve

    from personactl.judges.llm import OpenAIJudge

    state = FakeChat()
    state.delay = 0.05
    with serve(state) as url:
        judge = OpenAIJudge(
            "fake", "[QUESTION START]{question}[QUESTION END] [ANSWER START]{answer}[ANSWER END]", base_url=url, api_key="x", concurrency=2
        )
        records = _sweep(
            model_dir,
            tmp_path / "judged",
            lambda ctx, qs: RayRunner(pool, ctx, ["vector"], qs, CONFIG.seed),
            Judges(judge, RepetitionCoherenceJudge()),
        )
    assert state.count == len(records) == 2 * 3 * 4  # every answer judged once, by the driver
    assert 1 <= state.max_in_flight <= 2  # two workers, still one limiter of 2 requests in flight
    assert all(r["trait"] is not None for r in records)


def test_extract_several_traits_on_ray_gives_the_vectors_of_one_process(local_ray, model_dir, tmp_path, capsys):
    from personactl import load_vector

    args = ["extract", "--model", str(model_dir), "--n-questions", "2", "--max-new-tokens", "3"]
    assert run([*args, "--traits", "pirate,silly", "--out", str(tmp_path / "ray"), "--ray", "local"]) == 0
    assert "2 traits" in capsys.readouterr().out
    assert run([*args, "--trait", "silly", "--out", str(tmp_path / "one.safetensors")]) == 0
    vectors = {name: load_vector(tmp_path / "ray" / f"{name}.safetensors") for name in ("pirate", "silly")}
    assert {v.trait for v in vectors.values()} == {"pirate", "silly"}
    assert (tmp_path / "ray" / "pirate.pairs.jsonl").is_file()
    assert torch.allclose(vectors["silly"].directions, load_vector(tmp_path / "one.safetensors").directions, atol=1e-5)


def test_extract_with_ray_wants_a_folder(capsys, tmp_path):
    assert run(["extract", "--traits", "pirate,silly", "--out", str(tmp_path / "v.safetensors")]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_a_run_killed_midway_resumes_with_ray(local_ray, model_dir, tmp_path, capsys):
    args = [
        "sweep",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path),
        "--n-questions",
        "2",
        "--max-new-tokens",
        "3",
        "--layers",
        "1",
        "--coefs=-1,0,1",
        "--batch-size",
        "2",
    ]
    assert run([*args, "--name", "whole"]) == 0
    whole = (tmp_path / "whole" / "results.jsonl").read_text().splitlines()
    assert run([*args, "--name", "cut"]) == 0
    results = tmp_path / "cut" / "results.jsonl"
    results.write_text("\n".join(whole[:2]) + "\n" + whole[2][:25])  # as a driver killed mid-write leaves it
    assert run([*args, "--name", "cut", "--ray", "local", "--ray-actors", "2"]) == 0
    assert "2 workers" in capsys.readouterr().out
    resumed = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(resumed) == len({r["key"] for r in resumed}) == len(whole)
    assert _by_key(resumed) == _by_key([json.loads(line) for line in whole])


def fail_on_odd(backbone, memo, item):
    if item % 2:
        raise PersonactlError(f"item {item} is odd")
    return item * 10


def test_a_failing_item_is_named_and_the_finished_ones_are_kept(pool):
    finished = []
    with pytest.raises(ScaleoutError) as err:
        for _index, value in pool.map(fail_on_odd, [0, 2, 4, 1, 6], label=lambda i: f"record {i}"):
            finished.append(value)
    assert str(err.value).startswith("record 1 failed on a worker: item 1 is odd") and "re-run to resume" in str(err.value)
    assert finished and set(finished) <= {0, 20, 40, 60}  # what finished before the failure came back, all from even items


def test_a_sweep_chunk_that_fails_names_its_record_keys(pool, model_dir, tmp_path):
    with pytest.raises(ScaleoutError) as err:
        _sweep(model_dir, tmp_path / "bad", lambda ctx, qs: RayRunner(pool, ctx, ["no-such-method"], qs, CONFIG.seed))
    # whichever chunk comes back first is named, by the keys of its first and last record
    assert re.match(
        r"records vector\|L[12]\|c-?[01]\|q[0-3]\|s0 \.\. vector\|L[12]\|c-?[01]\|q[0-3]\|s0 \(4\) failed on a worker: "
        r"unknown method 'no-such-method'",
        str(err.value),
    ), str(err.value)
    assert not (tmp_path / "bad" / "results.jsonl").exists()


def test_describe_group_names_the_keys():
    from personactl.evaluate import Condition

    group = [Condition("vector", 3, 1.0, q, 0) for q in range(3)]
    assert describe_group(group) == "records vector|L3|c1|q0|s0 .. vector|L3|c1|q2|s0 (3)"
    assert describe_group(group[:1]) == "records vector|L3|c1|q0|s0"


def test_an_unreachable_address_fails_in_seconds(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    started = time.monotonic()
    assert run(["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--ray", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 10
    assert err.startswith("error: cannot reach Ray at 127.0.0.1:9") and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("spec", ["host:port", ":6379", "ray://"])
def test_a_malformed_address_is_refused(spec):
    with pytest.raises(ScaleoutError, match="use local, auto, HOST:PORT"):
        parse_address(spec)


def test_ray_missing_says_how_to_install_it(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert run(["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--ray", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'personactl[ray]'" in err and len(err.splitlines()) == 1


def test_zero_actors_is_refused(local_ray, model_dir):
    with pytest.raises(ScaleoutError, match="at least 1"):
        WorkerPool(PoolSettings(str(model_dir), actors=0))


def test_a_pool_the_cluster_cannot_place_is_refused_instead_of_waiting(pool, model_dir):
    with pytest.raises(ScaleoutError, match="2 Ray actors need 2 CPUs; the cluster has 0 CPUs and 0 GPUs free"):  # noqa: PT012
        assert len(set(pool.ready())) == 2  # `pool` holds both CPUs once its actors are placed
        WorkerPool(PoolSettings(str(model_dir), actors=2))


def test_ctrl_c_on_a_local_ray_is_one_line_with_exit_code_130():
    def job():
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as err:
        run_on_ray("local", job, Ending(lambda: "3 records kept"))
    assert str(err.value) == "interrupted: 3 records kept, re-run the same command to resume" and err.value.exit_code == 130


def test_a_driver_that_never_connects_is_ended_at_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "CONNECT_DEADLINE_S", 0.5)
    child = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(ScaleoutError, match=r"Ray at 10\.0\.0\.5:6379 did not take the driver within 0\.5 s"):
            driver._watch(child, tmp_path, "10.0.0.5:6379")
    finally:
        child.kill()
        child.wait()


def test_a_gcs_port_that_stays_closed_means_the_cluster_is_lost(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing answers there
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    (tmp_path / driver.CONNECTED).write_text(closed)
    monkeypatch.setattr(driver, "GCS_CHECK_S", 0.05)
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "0.2")
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert driver._watch(child, tmp_path, "10.0.0.5:6379") == f"its GCS at {closed} stopped answering for 0.2 s"
    finally:
        child.kill()
        child.wait()


def test_a_port_that_speaks_http_is_not_taken_for_a_ray_head():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ScaleoutError, match="answers but is not a Ray head"):
            check_reachable(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_a_bench_on_ray_gives_the_single_process_records(pool, model_dir, tmp_path):
    from functools import partial

    from personactl import BenchConfig, run_bench

    config = BenchConfig(
        model=str(model_dir),
        traits=["pirate"],
        methods=["prompt", "vector", "adapter"],
        extraction_questions=21,
        n_questions=3,
        max_new_tokens=4,
        batch_size=8,
        blend=2,
        adapter_epochs=1,
        keep_unexpressed=True,
    )
    backbone = load_model(str(model_dir))
    alone = run_bench(config, tmp_path / "alone", backbone)
    spread = run_bench(config, tmp_path / "ray", backbone, partial(RayRunner, pool))

    def scored(result):
        return {r["key"]: (r["method"], r["answer"], r["trait_score"], r["coherence"], r["relevance"]) for r in result.records}

    assert len(scored(alone)) == 4 * 3 and scored(spread) == scored(alone)
    assert {t.trait: {k: c.coef for k, c in t.choices.items()} for t in spread.traits} == {
        t.trait: {k: c.coef for k, c in t.choices.items()} for t in alone.traits
    }
