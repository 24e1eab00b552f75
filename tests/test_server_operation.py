"""Operating the persona server: strict persona requests, the token, the Host check, broken vector files, the port."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import httpx
import pytest
import torch
from conftest import random_vectors, tiny_backbone

from personactl import PersonaVector
from personactl.server import PersonaLibrary, PersonaRequest, ServerError, ServerSettings, UnknownPersona, running_server

QUESTION = [{"role": "user", "content": "hello there"}]
TOKEN = "a-token-of-24-characters"


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("llama")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    return random_vectors(tmp_path_factory.mktemp("vectors"), ("rand", "other"))


@pytest.fixture(scope="module")
def url(backbone, vectors):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, max_tokens=16, allowed_hosts=["box.lan"])) as served:
        yield served.url


def _persona(url: str, persona: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2, "persona": persona}, timeout=60)


@pytest.mark.parametrize(
    "persona, where",
    [
        ({"vector": [{"name": "rand", "coef": 2}]}, "persona.vector"),  # misspelt "vectors"
        ({"vectors": [{"name": "rand", "coef": 2, "cap": 3}]}, "persona.vectors.0.cap"),
        ({"vectors": [], "cap": 3}, "persona.cap"),
    ],
)
def test_unknown_keys_in_a_persona_are_400_naming_the_field(url, persona, where):
    response = _persona(url, persona)
    assert response.status_code == 400 and where in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "persona, message",
    [
        ({"vectors": [{"name": "rand", "coef": 50, "layers": [2]}] * 4}, "twice at layer 2"),
        ({"vectors": [{"name": "rand", "coef": 1, "layers": [2, 2]}]}, "twice at layer 2"),
        ({"vectors": [{"name": "rand", "coef": 1, "layers": [1, 2]}, {"name": "rand", "coef": 1, "layers": [2, 3]}]}, "twice at layer 2"),
        ({"vectors": [{"name": "rand", "coef": 1, "layers": [2] * 2000}]}, "lists 2000 layers: the model has 3"),
        (
            {"vectors": [{"name": "rand", "coef": 30, "layers": [2]}, {"name": "other", "coef": -30, "layers": [2]}]},
            "sum to 60 at layer 2: at most 50",
        ),
    ],
)
def test_steering_cannot_be_multiplied_past_the_cap(url, persona, message):
    response = _persona(url, persona)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_the_same_vector_on_other_layers_and_two_vectors_within_the_cap_are_served(url):
    assert _persona(url, {"vectors": [{"name": "rand", "coef": 1, "layers": [1]}, {"name": "rand", "coef": 2, "layers": [2]}]}).status_code == 200
    assert _persona(url, {"vectors": [{"name": "rand", "coef": 25, "layers": [2]}, {"name": "other", "coef": -25, "layers": [2]}]}).status_code == 200


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "-Infinity", "1e308", "4.5"])
def test_blend_weights_must_be_finite_and_in_range(url, weight):
    body = f'{{"messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 2, "persona": {{"adapter": {{"blend": {{"arr": {weight}}}}}}}}}'
    response = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 400 and "blend weight of 'arr'" in response.json()["error"]["message"]


def test_a_blend_with_other_keys_is_refused():
    with pytest.raises(ValueError, match="nothing else"):
        PersonaRequest(adapter={"blend": {"arr": 1.0}, "scale": {"x": 2.0}})


def test_the_per_layer_cap_is_a_setting(backbone, vectors):
    library = PersonaLibrary(backbone, vectors)
    persona = PersonaRequest(vectors=[{"name": "rand", "coef": 6, "layers": [2]}, {"name": "other", "coef": 6, "layers": [2, 3]}])
    library.check(persona, max_personas=4)
    with pytest.raises(UnknownPersona, match="sum to 12 at layer 2: at most 10"):
        library.check(persona, max_personas=4, max_steering=10)


# ---------- the token ----------


def test_the_page_is_public_and_everything_else_needs_the_token(backbone, vectors):
    with running_server(backbone, ServerSettings(port=0, vectors=vectors, token=TOKEN)) as served:
        url = served.url
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200 and 'id="token"' in page.text
        assert httpx.get(f"{url}/static/app.js", timeout=30).status_code == 200
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/personas"),
            ("GET", "/personas/jobs/x"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/personas/extract"),
            ("POST", "/"),
        ]:
            denied = httpx.request(method, f"{url}{path}", json={}, timeout=30)
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer", path
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert httpx.get(f"{url}/personas", headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=30).status_code == 200
        assert httpx.get(f"{url}/personas", headers={"Authorization": f"Basic {TOKEN}"}, timeout=30).status_code == 401


def test_a_short_token_is_refused_at_start(backbone):
    with pytest.raises(ServerError, match="at least 16"):
        with running_server(backbone, ServerSettings(port=0, token="s3cret")):
            pass


def _fake_cli(monkeypatch) -> list:
    """The CLI's `serve` with a stand-in model, and whatever it would have served recorded instead of served."""
    served: list = []
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: SimpleNamespace(name="tiny"))
    monkeypatch.setattr("personactl.server.serve", lambda backbone, settings, sock: served.append((settings, sock.getsockname()[1])))
    return served


def test_serve_refuses_a_short_token_and_generates_one_with_auto(capsys, monkeypatch):
    from personactl.cli import run

    served = _fake_cli(monkeypatch)
    assert run(["serve", "--token", "s3cret"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "at least 16" in err and len(err.splitlines()) == 1 and not served
    assert run(["serve", "--token", "auto", "--port", "0"]) == 0
    settings, _port = served[0]
    assert len(settings.token) >= 16 and f"token: {settings.token}" in capsys.readouterr().out


# ---------- the Host header ----------


@pytest.mark.parametrize(
    "host, status",
    [
        ("attacker.example", 400),
        ("attacker.example:8000", 400),
        ("localhost.attacker.example", 400),
        ("127.0.0.1.nip.io", 400),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("127.0.0.1:80", 200),
        ("[::1]:8000", 200),
        ("box.lan:8080", 200),
    ],
)
def test_a_loopback_server_answers_only_to_loopback_host_names(url, host, status):
    for path in ("/", "/v1/models"):
        response = httpx.get(f"{url}{path}", headers={"Host": host}, timeout=30)
        assert response.status_code == status, (path, host)
    if status == 400:
        assert "--allow-host" in response.json()["error"]["message"]


def test_beyond_loopback_any_host_passes_unless_hosts_are_listed():
    from personactl.server.guard import host_allowed

    open_server = ServerSettings(host="0.0.0.0", token=TOKEN)
    assert host_allowed("attacker.example", open_server) and host_allowed("10.0.0.5:8000", open_server)
    listed = ServerSettings(host="0.0.0.0", token=TOKEN, allowed_hosts=["box.lan"])
    assert host_allowed("box.lan:8000", listed) and host_allowed("localhost", listed) and not host_allowed("attacker.example", listed)


# ---------- broken and linked vector files ----------


@pytest.fixture
def messy(tmp_path, vectors):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "rand.safetensors").write_bytes((vectors / "rand.safetensors").read_bytes())
    (folder / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    PersonaVector(torch.randn(4, 32), trait="narrow").save(folder / "narrow.safetensors")  # another model's hidden size
    os.symlink(vectors / "other.safetensors", folder / "linked.safetensors")  # a link to a vector outside the folder
    os.symlink(tmp_path / "gone.safetensors", folder / "dangling.safetensors")
    return folder


def test_broken_vector_files_are_listed_by_name_and_the_good_ones_still_serve(backbone, messy):
    with running_server(backbone, ServerSettings(port=0, vectors=messy)) as served:
        listing = httpx.get(f"{served.url}/personas", timeout=30)
        assert listing.status_code == 200
        data = listing.json()
        assert [v["name"] for v in data["vectors"]] == ["linked", "rand"]
        broken = {b["name"]: b["reason"] for b in data["broken"]}
        assert sorted(broken) == ["dangling", "garbage", "narrow"] and "hidden size 32" in broken["narrow"]
        assert str(messy.parent) not in listing.text and str(messy.resolve().parent) not in listing.text
        refused = _persona(served.url, {"vectors": [{"name": "garbage", "coef": 1}]})
        assert refused.status_code == 400 and "garbage.safetensors" in refused.json()["error"]["message"]
        assert str(messy.parent) not in refused.text
        assert _persona(served.url, {"vectors": [{"name": "linked", "coef": 2, "layers": [2]}]}).status_code == 200


# ---------- the port ----------


def test_port_0_prints_the_real_port(capsys, monkeypatch):
    from personactl.cli import run

    served = _fake_cli(monkeypatch)
    assert run(["serve", "--port", "0"]) == 0
    _settings, port = served[0]
    assert port != 0 and f"http://127.0.0.1:{port}/v1" in capsys.readouterr().out


def test_a_port_in_use_is_one_error_line_before_loading(backbone, capsys, monkeypatch):
    from personactl.cli import run

    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model"))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert run(["serve", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and len(err.splitlines()) == 1
        with pytest.raises(ServerError, match="cannot listen"):
            with running_server(backbone, ServerSettings(port=port)):
                pass


def test_cors_lets_the_allowed_origin_cancel_an_extraction(backbone):
    with running_server(backbone, ServerSettings(port=0, cors="http://app.example")) as served:
        preflight = httpx.options(
            f"{served.url}/personas/jobs/x",
            timeout=30,
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "authorization"},
        )
        assert preflight.status_code == 200 and "DELETE" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    "cap, message",
    [
        ({"name": "rand", "at": "3:1"}, "cap of 'rand': cap range '3:1' is empty at layer"),
        ({"name": "rand", "at": "neg-p900"}, "neither a number nor a statistic"),
        ({"name": "rand", "at": "neg-p90"}, "has none: re-extract it"),  # random vectors store no projections
        ({"name": "rand", "at": "0:1", "layers": [9]}, "layer 9 is out of range for 'rand'"),
        ({"name": "nobody", "at": "0:1"}, "nobody"),
    ],
)
def test_bad_caps_are_400_before_they_queue(url, cap, message):
    response = _persona(url, {"cap": [cap]})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_cap_in_numbers_is_served(url):
    assert _persona(url, {"cap": [{"name": "rand", "at": "-1:1", "layers": [1, 2]}], "positions": "all"}).status_code == 200
