"""Activation capping: states inside the range are untouched, states outside move along the direction only."""

import pytest
import torch
from conftest import tiny_backbone

from personactl import CapRangeError, PersonaVector, SteeringError, SteeringTerm, activations, cap_bounds, cap_term, steer
from personactl.capping import parse_cap_at


def _vector(backbone, seed=1, stored=True):
    torch.manual_seed(seed)
    vector = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size), trait="random")
    if stored:
        layers = list(range(1, backbone.n_layers + 1))
        vector.extra["projections"] = {
            "layers": layers,
            "pos": (torch.arange(20.0)[:, None] + 10 * torch.ones(len(layers))).tolist(),
            "neg": (torch.arange(20.0)[:, None] * torch.ones(len(layers))).tolist(),
        }
    return vector


def _states(backbone, batch):
    return activations.hidden_states(backbone, batch.input_ids, batch.attention_mask)


@pytest.fixture
def tiny():
    return tiny_backbone("llama")


@pytest.fixture
def batch(tiny):
    return activations.make_batch(tiny, ["<user>one two", "<user>three"], [" four five", " six"])


def _along(states, vector, layer):
    unit = vector.unit(layer)
    return states[layer] @ unit, states[layer] - (states[layer] @ unit)[..., None] * unit


def test_cap_clamps_the_projection_and_leaves_the_orthogonal_part_and_the_states_inside(tiny, batch):
    vector, layer = _vector(tiny), 2
    base = _states(tiny, batch)
    along, rest = _along(base, vector, layer)
    low, high = float(along.quantile(0.3)), float(along.quantile(0.7))  # a range some states lie outside on each side
    with steer(tiny, SteeringTerm(vector, layer, op="cap", bounds={layer: (low, high)})):
        capped = _states(tiny, batch)
    along_c, rest_c = _along(capped, vector, layer)
    torch.testing.assert_close(along_c, along.clamp(low, high), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rest_c, rest, rtol=1e-4, atol=1e-4)
    inside = (along >= low) & (along <= high)
    assert inside.any() and (~inside).any()
    assert torch.equal(capped[layer][inside], base[layer][inside])  # exactly untouched, not just close
    torch.testing.assert_close(capped[:layer], base[:layer], rtol=0, atol=0)


def test_an_open_side_caps_only_the_other(tiny, batch):
    vector, layer = _vector(tiny), 1
    base = _states(tiny, batch)
    along, _ = _along(base, vector, layer)
    high = float(along.median())
    with steer(tiny, SteeringTerm(vector, layer, op="cap", bounds={layer: (None, high)})):
        along_c, _ = _along(_states(tiny, batch), vector, layer)
    torch.testing.assert_close(along_c, along.clamp(max=high), rtol=1e-4, atol=1e-4)


def test_per_row_strength_caps_only_the_rows_asked(tiny, batch):
    vector, layer = _vector(tiny), 2
    base = _states(tiny, batch)
    along, _ = _along(base, vector, layer)
    high = float(along.min())  # every state is above: everything in a capped row moves
    with steer(tiny, SteeringTerm(vector, layer, [0.0, 1.0], op="cap", bounds={layer: (None, high)})):
        capped = _states(tiny, batch)
    assert torch.equal(capped[layer][0], base[layer][0])
    along_c, _ = _along(capped, vector, layer)
    torch.testing.assert_close(along_c[1], torch.full_like(along_c[1], high), rtol=1e-4, atol=1e-4)


def test_ranges_come_from_the_stored_projections(tiny):
    vector = _vector(tiny)
    neg = torch.arange(20.0)
    bounds = cap_bounds(vector, [1, 3], "neg-p90")
    assert bounds == {1: (None, pytest.approx(float(neg.quantile(0.9)))), 3: (None, pytest.approx(float(neg.quantile(0.9))))}
    assert cap_bounds(vector, [2], "neg-min:pos-mean")[2] == (0.0, pytest.approx(19.5))
    assert cap_bounds(vector, [2], "-1.5:")[2] == (-1.5, None)
    term = cap_term(vector, range(1, 3), "2:3")
    assert term.op == "cap" and term.layer_list() == [1, 2] and term.bounds == {1: (2.0, 3.0), 2: (2.0, 3.0)}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "is empty"),
        (":", "is empty"),
        ("neg-p150", "neither a number nor a statistic"),
        ("neutral-p90", "neither a number nor a statistic"),
        ("neg-median", "neither a number nor a statistic"),
        ("3:1", "low 3 is above high 1"),
        ("pos-mean:neg-mean", "low 19.5 is above high 9.5"),
    ],
)
def test_bad_ranges_are_one_line_errors(tiny, spec, message):
    with pytest.raises(CapRangeError, match=message) as err:
        cap_bounds(_vector(tiny), [1], spec)
    assert "\n" not in str(err.value)


def test_a_statistic_needs_stored_projections_but_numbers_do_not(tiny):
    bare = _vector(tiny, stored=False)
    with pytest.raises(CapRangeError, match="has none: re-extract it"):
        cap_bounds(bare, [1], "neg-p90")
    assert cap_bounds(bare, [1], "-1:2") == {1: (-1.0, 2.0)}


def test_a_layer_without_stored_projections_is_refused(tiny):
    vector = _vector(tiny)
    vector.extra["projections"]["layers"] = [1, 2]
    with pytest.raises(CapRangeError, match="no projections at layer 3"):
        cap_bounds(vector, [3], "neg-p90")


def test_steer_refuses_a_cap_term_without_bounds_or_with_an_empty_range(tiny, batch):
    vector = _vector(tiny)
    with pytest.raises(SteeringError, match="needs bounds at layer 2"), steer(tiny, SteeringTerm(vector, [1, 2], op="cap", bounds={1: (0, 1)})):
        pass
    with pytest.raises(SteeringError, match="low 2 above high 1"), steer(tiny, SteeringTerm(vector, 1, op="cap", bounds={1: (2.0, 1.0)})):
        pass


def test_parse_keeps_open_sides():
    assert parse_cap_at("neg-p90") == (None, "neg-p90")
    assert parse_cap_at(" pos-p10 : ") == ("pos-p10", None)


def _generate(model_dir, vector, *extra):
    from personactl.cli import run

    argv = [
        "generate",
        "--model",
        str(model_dir),
        "--vector",
        str(vector),
        "--layer",
        "1",
        "--layer",
        "2",
        "--prompt",
        "hi",
        "--prompt",
        "hello there",
    ]
    return run([*argv, "--baseline", "--json", "--max-new-tokens", "6", *extra])


def test_generate_with_a_range_nothing_leaves_changes_nothing_and_a_tight_one_does(model_dir, vector_file, capsys):
    import json

    assert _generate(model_dir, vector_file, "--op", "cap", "--cap-at=-1e9:1e9") == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert all(r["steered"] == r["baseline"] for r in rows)
    assert _generate(model_dir, vector_file, "--op", "cap", "--cap-at=-0.001:0.001") == 0  # project the direction out
    rows = json.loads(capsys.readouterr().out)["results"]
    assert any(r["steered"] != r["baseline"] for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--op", "cap", "--cap-at", "3:1"], "low 3 is above high 1"),
        (["--op", "cap"], "has none: re-extract it"),
        (["--op", "cap", "--cap-at", "neg-p900"], "neither a number nor a statistic"),
        (["--op", "clamp"], "--op 'clamp' is not one of: add, ablate, cap"),
        (["--op", "cap", "--cap-at", "0:1", "--backend", "llamacpp"], "--op cap needs --backend hf"),
    ],
)
def test_generate_refuses_bad_caps_in_one_line(model_dir, vector_file, capsys, extra, message):
    assert _generate(model_dir, vector_file, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def _sweep(model_dir, tmp_path, name, *extra):
    from personactl.cli import run

    argv = ["sweep", "--model", str(model_dir), "--trait", "pirate", "--out", str(tmp_path), "--name", name, "--methods", "cap"]
    return run([*argv, "--layers", "2", "--n-questions", "2", "--max-new-tokens", "4", *extra])


def test_sweep_method_cap_with_a_range_nothing_leaves_answers_as_unsteered(model_dir, tmp_path, capsys):
    import json

    assert _sweep(model_dir, tmp_path, "wide", "--coefs", "0,1", "--cap-at=-1e9:1e9") == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "wide" / "results.jsonl").read_text().splitlines()]
    by_coef = {c: {r["question"]: r["answer"] for r in records if r["coef"] == c} for c in (0, 1)}
    assert {r["method"] for r in records} == {"cap"} and len(by_coef[1]) == 2 and by_coef[0] == by_coef[1]


def test_sweep_method_cap_refuses_a_negative_strength(model_dir, tmp_path, capsys):
    assert _sweep(model_dir, tmp_path, "neg", "--coefs=-1,1") == 2
    assert "strengths in [0, 1]" in capsys.readouterr().err


def test_chat_caps_and_refuses_bad_caps_in_one_line(tmp_path):
    from personactl.lora import ChatSession

    backbone = tiny_backbone("llama")
    path = _vector(backbone, stored=False).save(tmp_path / "v.safetensors")
    session = ChatSession(backbone, max_new_tokens=4)
    try:
        plain = session.handle("hello")
        session.handle("/reset")
        assert session.handle(f"/cap {path} -1e9:1e9 1-3") == "cap v.safetensors at -1e9:1e9 on layers 1, 2, 3"
        assert session.handle("hello") == plain  # a range nothing leaves changes nothing
        for command, message in [
            (f"/cap {path} 3:1", "low 3 is above high 1"),
            (f"/cap {path} neg-p90", "has none: re-extract it"),
            (f"/cap {path} 0:1 2-9", "layer 4 is out of range"),
            (f"/cap {path} 0:1 2 extra", "use /cap PATH [RANGE] [LAYERS]"),
        ]:
            answer = session.handle(command)
            assert answer.startswith("error: ") and message in answer and "\n" not in answer, answer
        assert len(session.caps) == 1  # a refused command leaves the cap as it was
        assert session.handle("/cap off") == "cap off" and session.caps == []
    finally:
        session.close()
