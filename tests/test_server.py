"""The persona server on a tiny model, spoken to with the official openai client over 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch
from conftest import random_vectors, tiny_backbone
from openai import BadRequestError, OpenAI

from personactl.server import ServerError, ServerSettings, running_server

QUESTION = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("llama")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    return random_vectors(tmp_path_factory.mktemp("vectors"))


@pytest.fixture(scope="module")
def served(backbone, vectors):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, max_tokens=64, max_personas=2, batch_window_s=0.05)) as served:
        yield served


@pytest.fixture(scope="module")
def server(served):
    return served.url


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def _chat(client, persona=None, **kw):
    extra = {"persona": persona} if persona is not None else None
    reply = client.chat.completions.create(model="personactl", messages=QUESTION, max_tokens=12, temperature=0, extra_body=extra, **kw)
    return reply.choices[0].message.content


def test_models_chat_and_completions(client):
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    reply = client.chat.completions.create(model="personactl", messages=QUESTION, max_tokens=8, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 8
    text = client.completions.create(model="personactl", prompt="<user>hi</s><assistant>", max_tokens=8, temperature=0)
    assert text.choices[0].text is not None and text.usage.completion_tokens <= 8


def test_streaming_gives_the_same_answer_as_one_reply(client):
    stream = client.chat.completions.create(model="personactl", messages=QUESTION, max_tokens=12, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == _chat(client)
    completion = client.completions.create(model="personactl", prompt="<user>hi</s><assistant>", max_tokens=6, temperature=0, stream=True)
    assert len([c for c in completion]) >= 2


def test_logprobs_are_log_probabilities_of_the_chosen_tokens(client):
    reply = client.chat.completions.create(model="personactl", messages=QUESTION, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in content)
    assert all(abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5 for t in content)  # greedy: the chosen token is the most likely
    legacy = client.completions.create(model="personactl", prompt="<user>hi</s><assistant>", max_tokens=4, temperature=0, logprobs=2)
    assert len(legacy.choices[0].logprobs.token_logprobs) == len(legacy.choices[0].logprobs.top_logprobs) >= 1


def test_a_persona_changes_the_answer_and_coefficient_zero_is_the_plain_model(client):
    plain = _chat(client)
    assert _chat(client, {"vectors": [{"name": "rand", "coef": 0.0, "layers": [2]}]}) == plain
    assert _chat(client, {"vectors": [{"name": "rand", "coef": 8.0, "layers": [2]}]}) != plain


def test_concurrent_requests_with_different_coefficients_equal_each_request_alone(client, served, monkeypatch):
    coefs = [0.0, 1.0, 2.0, 4.0, 6.0, 8.0]
    steps_before = served.engine.steps
    alone = {c: _chat(client, {"vectors": [{"name": "rand", "coef": c, "layers": [2]}]}) for c in coefs}
    steps_alone, steps_before = served.engine.steps - steps_before, served.engine.steps
    submitted = _count_submits(served.engine, monkeypatch)
    together: dict[float, str] = {}
    threads = [
        threading.Thread(target=lambda c=c: together.__setitem__(c, _chat(client, {"vectors": [{"name": "rand", "coef": c, "layers": [2]}]})))
        for c in coefs
    ]
    with served.engine.lock:  # no generation until every request waits: what the worker has not taken shares one batch
        for t in threads:
            t.start()
        _wait_until(lambda: len(submitted) == len(coefs))
    for t in threads:
        t.join()
    assert together == alone
    assert len(set(alone.values())) > 1
    assert served.engine.steps - steps_before < steps_alone  # requests shared forward passes


def test_the_meter_streams_a_projection_per_token(server):
    body = {
        "messages": QUESTION,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "persona": {"vectors": [{"name": "rand", "coef": 2.0, "layers": [2]}], "meter": True},
    }
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    import json

    chunks = [json.loads(line[6:]) for line in lines]
    meters = [c["persona_meter"]["rand"] for c in chunks if "persona_meter" in c]
    assert meters and all(isinstance(v, float) for v in meters)


@pytest.mark.parametrize(
    "persona, message",
    [
        ({"vectors": [{"name": "../rand", "coef": 1}]}, "not a persona name"),
        ({"vectors": [{"name": "/etc/passwd", "coef": 1}]}, "not a persona name"),
        ({"vectors": [{"name": "missing", "coef": 1}]}, "no persona vector 'missing'"),
        ({"vectors": [{"name": "rand", "coef": 1, "layers": [9]}]}, "out of range"),
        ({"vectors": [{"name": "rand", "coef": 1}] * 3}, "at most 2"),
        ({"adapter": "butler"}, "no adapter folder"),
    ],
)
def test_bad_personas_are_400_with_a_message(client, persona, message):
    with pytest.raises(BadRequestError, match=message):
        _chat(client, persona)


def test_limits_and_validation_are_json_errors(server, client):
    with pytest.raises(BadRequestError, match="over this server's limit of 64"):
        client.chat.completions.create(model="personactl", messages=QUESTION, max_tokens=1000)
    response = httpx.post(f"{server}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert response.status_code == 400 and "messages" in response.json()["error"]["message"]
    response = httpx.post(f"{server}/v1/chat/completions", content=b"x" * 70_000, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413 and "error" in response.json()
    chunked = httpx.post(f"{server}/v1/chat/completions", content=iter([b'{"messages": ', b"[]}"]), timeout=30)
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["error"]["message"]
    assert httpx.get(f"{server}/personas", timeout=30).json()["vectors"][0]["name"] == "rand"
    with pytest.raises(BadRequestError, match="at most 2048"):  # past the tiny model's 2048 positions: refused, not prefilled
        client.chat.completions.create(model="personactl", messages=[{"role": "user", "content": "x" * 3000}], max_tokens=4)


def test_a_token_is_required_on_every_route_when_set(backbone, vectors):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, token="s3cret-s3cret-s3cret")) as served:
        url = served.url
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401
        assert httpx.get(f"{url}/personas", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        client = OpenAI(base_url=f"{url}/v1", api_key="s3cret-s3cret-s3cret", max_retries=0)
        assert client.models.list().data


def test_binding_beyond_loopback_needs_a_token():
    with pytest.raises(ServerError, match="--token"):
        ServerSettings(host="0.0.0.0").check()
    ServerSettings(host="0.0.0.0", token="t" * 16).check()
    ServerSettings(host="localhost").check()


def _wait_until(condition, seconds: float = 60.0) -> None:
    """Poll `condition` (a failing test, not a slow machine, reaches the deadline)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _count_submits(engine, monkeypatch) -> list:
    """The jobs submitted to `engine` from now on, in order (its queue shows only those not yet taken)."""
    submitted: list = []

    def submit(job) -> None:
        engine.__class__.submit(engine, job)
        submitted.append(job)

    monkeypatch.setattr(engine, "submit", submit)
    return submitted


def test_a_full_queue_answers_429_with_retry_after(backbone, vectors, monkeypatch):
    body = {"messages": QUESTION, "max_tokens": 2}
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, queue_size=1, batch_window_s=0)) as served:
        engine, results = served.engine, []
        submitted = _count_submits(engine, monkeypatch)

        def post() -> None:
            results.append(httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60).status_code)

        waiting = [threading.Thread(target=post) for _ in range(2)]
        with engine.lock:  # generation is blocked: the first request is taken and waits, the second fills the queue
            waiting[0].start()
            _wait_until(lambda: len(submitted) == 1 and engine.queue.empty())  # the worker took the first job
            waiting[1].start()
            _wait_until(engine.queue.full)
            third = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60)
            assert third.status_code == 429 and third.headers["retry-after"] == "2" and "retry" in third.json()["error"]["message"]
        for thread in waiting:
            thread.join()
        assert results == [200, 200]


def test_serve_beyond_loopback_without_a_token_is_one_line_before_loading(capsys, monkeypatch):
    from personactl.cli import run

    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model"))
    assert run(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--token" in err and len(err.splitlines()) == 1


def test_a_custom_trait_is_extracted_in_the_background_and_then_usable_by_name(served, client):
    body = {
        "name": "shouty",
        "description": "writes in capitals",
        "positive": ["Answer in CAPITAL LETTERS."],
        "negative": ["Answer in lower case."],
        "questions": ["hi", "how are you?", "what is up?"],
    }
    job = httpx.post(f"{served.url}/personas/extract", json=body, timeout=30).json()
    assert job["status"] in ("queued", "running") and job["name"] == "shouty"
    seen = []

    def finished() -> bool:
        state = httpx.get(f"{served.url}/personas/jobs/{job['job']}", timeout=30).json()
        seen.append(state["progress"])
        return state["status"] in ("done", "failed")

    _wait_until(finished, 120)
    assert httpx.get(f"{served.url}/personas/jobs/{job['job']}", timeout=30).json()["status"] == "done"
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert "shouty" in [v["name"] for v in httpx.get(f"{served.url}/personas", timeout=30).json()["vectors"]]
    assert _chat(client, {"vectors": [{"name": "shouty", "coef": 0.0, "layers": [2]}]}) == _chat(client)
    again = httpx.post(f"{served.url}/personas/extract", json=body, timeout=30)
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    bad = httpx.post(f"{served.url}/personas/extract", json={**body, "name": "../etc"}, timeout=30)
    assert bad.status_code == 400
    assert httpx.get(f"{served.url}/personas/jobs/nope", timeout=30).status_code == 404


BIG_TRAIT = {
    "name": "chatty",
    "positive": [f"Talk a lot, style {i}." for i in range(6)],
    "negative": [f"Be terse, style {i}." for i in range(6)],
    "questions": [f"question number {i}?" for i in range(10)],
}


def _job_state(url: str, job: dict) -> dict:
    return httpx.get(f"{url}/personas/jobs/{job['job']}", timeout=30).json()


def test_extraction_does_not_stop_serving_and_can_be_cancelled(backbone, vectors, tmp_path):
    for path in vectors.glob("*.safetensors"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with running_server(backbone, ServerSettings(port=0, vectors=tmp_path, max_tokens=64)) as served:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
        job = httpx.post(f"{served.url}/personas/extract", json=BIG_TRAIT, timeout=30).json()
        _wait_until(lambda: _job_state(served.url, job)["progress"] > 0)
        assert _chat(client)  # answered while the extraction generates (it takes only spare rows)
        assert _job_state(served.url, job)["status"] == "running"
        cancelled = httpx.delete(f"{served.url}/personas/jobs/{job['job']}", timeout=30).json()
        assert cancelled["status"] == "cancelled"
        _wait_until(lambda: served.engine.active() == 0)  # its answers left the batch
        assert _job_state(served.url, job)["status"] == "cancelled"
        assert "chatty" not in [v["name"] for v in httpx.get(f"{served.url}/personas", timeout=30).json()["vectors"]]
        assert not (tmp_path / "chatty.safetensors").exists()
        assert httpx.delete(f"{served.url}/personas/jobs/nope", timeout=30).status_code == 404


def test_extraction_size_and_count_are_capped(backbone, vectors, tmp_path):
    with running_server(backbone, ServerSettings(port=0, vectors=tmp_path, max_extract_answers=20, max_custom_vectors=1)) as served:
        too_big = httpx.post(f"{served.url}/personas/extract", json=BIG_TRAIT, timeout=30)
        assert too_big.status_code == 400 and "at most 20" in too_big.json()["error"]["message"]
        small = {"name": "one", "positive": ["Be loud."], "negative": ["Be quiet."], "questions": ["hi", "yo"]}
        first = httpx.post(f"{served.url}/personas/extract", json=small, timeout=30).json()
        _wait_until(lambda: _job_state(served.url, first)["status"] in ("done", "failed"), 120)
        assert _job_state(served.url, first)["status"] == "done" and (tmp_path / "one.safetensors").is_file()
        second = httpx.post(f"{served.url}/personas/extract", json={**small, "name": "two"}, timeout=30)
        assert second.status_code == 400 and "custom traits" in second.json()["error"]["message"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from personactl.lora.direction import LoRADirection, LoRAFactors

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    for name in ("arr", "bee"):
        modules = {f"model.layers.{i}.self_attn.q_proj": LoRAFactors(torch.randn(2, 48) * 3, torch.randn(48, 2) * 3, 2.0) for i in range(3)}
        LoRADirection(modules, config, {"name": name, "base_model": "tiny-llama", "base_model_type": "llama"}).save(root / name)
    return root


def test_adapters_by_name_and_as_a_blend(backbone, vectors, adapters):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, adapters=adapters)) as served:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
        plain = _chat(client)
        arr = _chat(client, {"adapter": "arr"})
        assert arr != plain and _chat(client) == plain  # the adapter is off again for the next request
        assert _chat(client, {"adapter": {"blend": {"arr": 1.0}}}) == arr  # a blend of one at weight 1 is the adapter
        assert _chat(client, {"adapter": {"blend": {"arr": 0.5, "bee": 0.5}}}) not in (plain, arr)
        assert {a["name"] for a in httpx.get(f"{served.url}/personas", timeout=30).json()["adapters"]} == {"arr", "bee"}
        with pytest.raises(BadRequestError, match="no adapter 'nope'"):
            _chat(client, {"adapter": "nope"})


def test_personactls_own_llm_judge_can_use_a_served_model(vectors):
    from test_judges_digits import RUBRIC, teach

    from personactl.judges.llm import OpenAIJudge

    judge_model = tiny_backbone("llama")
    answers = {"good pirate talk": "85", "plain talk": "12"}
    teach(judge_model, answers)  # it answers each judge prompt with its number, digit by digit
    with running_server(judge_model, ServerSettings(port=0, vectors=vectors)) as served:
        judge = OpenAIJudge("personactl", RUBRIC, base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
        assert judge.score(["", ""], list(answers)) == pytest.approx([85, 12], abs=3)


def test_load_200_requests_at_concurrency_16_each_with_its_own_coefficient(client):
    from concurrent.futures import ThreadPoolExecutor

    coefs = [round(-4 + 8 * i / 199, 3) for i in range(200)]

    def ask(coef: float) -> str:
        return _chat(client, {"vectors": [{"name": "rand", "coef": coef, "layers": [2]}]})

    poisoned = [{"seed": 2**64, "temperature": 1.0}, {"messages": [{"role": "user", "content": "\ud800"}]}]

    def poison(extra: dict) -> int:
        body = {"messages": QUESTION, "max_tokens": 12, "persona": {"vectors": [{"name": "rand", "coef": 1.0, "layers": [2]}]}, **extra}
        return httpx.post(
            f"{client.base_url}chat/completions", content=json.dumps(body).encode(), timeout=60, headers={"content-type": "application/json"}
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        bad = [pool.submit(poison, extra) for extra in poisoned * 4]  # sent among the good ones
        together = list(pool.map(ask, coefs))
    alone = [ask(c) for c in coefs]
    assert together == alone  # greedy: batching changes no answer, and no request failed
    assert [b.result() for b in bad] == [400] * len(bad)  # each poisoned request fails alone


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_stops_its_generation(served, monkeypatch, stream):
    """A client that times out (non-streaming) or closes its stream: the engine drops its row instead of computing
    all 64 tokens."""
    submitted = _count_submits(served.engine, monkeypatch)
    with served.engine.lock:  # admitted but not prefilled until the client has given up
        with pytest.raises(httpx.TimeoutException):
            with httpx.stream(
                "POST", f"{served.url}/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 64, "stream": stream}, timeout=0.5
            ) as response:
                response.read()
        _wait_until(lambda: submitted and submitted[0].cancelled.is_set())
        steps = served.engine.steps
    _wait_until(lambda: served.engine.active() == 0)
    assert served.engine.steps - steps <= 2


def test_a_stream_closed_midway_stops_its_generation(backbone, vectors, monkeypatch):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, max_tokens=512)) as served:
        submitted = _count_submits(served.engine, monkeypatch)
        body = {"messages": QUESTION, "max_tokens": 500, "stream": True}
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=60) as response:
            for number, _line in enumerate(response.iter_lines()):
                if number == 4:
                    break  # the client closes the stream after a few tokens
        _wait_until(lambda: served.engine.active() == 0)
        assert submitted[0].cancelled.is_set() and served.engine.steps < 500


def test_the_steering_cap_applies_to_the_sum_at_a_layer(backbone, vectors):
    both = {"vectors": [{"name": "rand", "coef": 6.0, "layers": [2]}, {"name": "rand2", "coef": 6.0, "layers": [2]}]}
    (vectors / "rand2.safetensors").write_bytes((vectors / "rand.safetensors").read_bytes())
    try:
        with running_server(backbone, ServerSettings(port=0, vectors=vectors, max_steering=10)) as served:
            client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(BadRequestError, match="10"):
                _chat(client, both)
            assert _chat(client, {"vectors": both["vectors"][:1]})
    finally:
        (vectors / "rand2.safetensors").unlink()


def test_the_recommended_layer_and_coefficients_come_from_the_vectors_run(backbone, vectors):
    from personactl.server import PersonaLibrary

    library = PersonaLibrary(backbone, vectors)
    assert library.layer("rand") == 2  # 2/3 of 3 blocks, at least 2
    assert library.describe()["vectors"][0]["coef_source"].startswith("default")
    (vectors / "rand.layers.json").write_text('{"chosen": 3}')
    (vectors / "rand.summary.csv").write_text(
        "method,layer,coef,trait_mean,coherence_mean\nvector,3,-1,10,95\nvector,3,0,20,95\nvector,3,2,60,80\nvector,3,4,90,30\nvector,2,9,99,99\n"
    )
    try:
        described = library.describe()["vectors"][0]
        assert described["layer"] == 3 and described["coef_range"] == [-1.0, 4.0]
        assert described["coef"] == 2.0  # the best trait among coherent answers (coef 4 broke coherence)
    finally:
        (vectors / "rand.layers.json").unlink()
        (vectors / "rand.summary.csv").unlink()


def test_a_generation_past_the_timeout_is_a_504_and_the_server_goes_on(backbone, vectors):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, timeout_s=0.5)) as served:
        with served.engine.lock:  # the model is busy for longer than the timeout
            late = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2}, timeout=30)
        assert late.status_code == 504 and "longer than 0.5 s" in late.json()["error"]["message"]
        served.engine.settings.timeout_s = 120.0  # the next request must not race a busy machine against 0.5 s
        assert httpx.post(f"{served.url}/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2}, timeout=130).status_code == 200


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--port", "70000"], "port"),
        (["serve", "--vectors", "/nonexistent/vectors"], "is not a folder"),
        (["serve", "--max-tokens", "0"], "max_tokens"),
    ],
)
def test_serve_bad_values_are_one_line_before_loading(argv, message, capsys, monkeypatch):
    from personactl.cli import run

    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model"))
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
