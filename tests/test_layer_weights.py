"""Adaptive multi-layer steering (`auto:K`): the weights, the steering terms, the sweep config, a sweep that
blends and resumes on a tiny model, and the one-line errors."""

import csv
import json

import pytest
import torch

from personactl.cli import run
from personactl.evaluate import SweepError, summarize, validate_config
from personactl.layer_selection import LayerScore, LayerSpecError, choose_layer, layer_weights
from personactl.steering import SteeringTerm, steer, weighted_terms


def _row(layer, effect, coherence):
    return LayerScore(layer, auroc=0.5, cohens_d=0.0, effect=effect, coherence=coherence)


ROWS = [_row(1, 30.0, 80.0), _row(2, 10.0, 90.0), _row(3, 50.0, 30.0), _row(4, -5.0, 95.0), _row(5, 20.0, 70.0), LayerScore(6, 0.9, 3.0)]


def test_weights_are_the_top_k_coherent_positive_effects_in_proportion_summing_to_one():
    blend = layer_weights(ROWS, 2)
    assert blend.weights == pytest.approx({1: 30 / 50, 5: 20 / 50}) and list(blend.weights) == [1, 5]
    assert sum(blend.weights.values()) == pytest.approx(1.0) and blend.note == "" and blend.spec == "auto:2"
    three = layer_weights(ROWS, 3).weights
    assert three == pytest.approx({1: 0.5, 5: 20 / 60, 2: 10 / 60})  # layer 3 (incoherent) and 4 (negative) never qualify


def test_auto_1_is_the_auto_layer_alone():
    assert layer_weights(ROWS, 1).weights == {choose_layer(ROWS)[0]: 1.0}


def test_fewer_qualifying_layers_than_k_are_used_and_said():
    blend = layer_weights(ROWS, 5)
    assert set(blend.weights) == {1, 2, 5} and "only 3 of the measured layers" in blend.note
    assert sum(blend.weights.values()) == pytest.approx(1.0)


def test_no_qualifying_layer_falls_back_to_the_auto_layer_and_says_why():
    rows = [_row(1, 40.0, 30.0), _row(2, -3.0, 90.0), _row(3, 25.0, 20.0)]
    blend = layer_weights(rows, 2)
    assert blend.weights == {choose_layer(rows)[0]: 1.0}
    assert "no layer had a positive effect with coherence >= 50" in blend.note


@pytest.mark.parametrize("k", [0, -1, 7])
def test_k_outside_the_model_is_one_clear_error(k):
    with pytest.raises(LayerSpecError, match=rf"auto:{k} asks for {k} layers but the model has 6: use auto:1 to auto:6"):
        layer_weights(ROWS, k)


def test_weighted_terms_scale_number_and_per_row_coefficients():
    v = torch.randn(4, 8)
    terms = weighted_terms(v, {2: 0.75, 1: 0.25}, 2.0, positions="response")
    assert [(t.layers, t.coef, t.positions) for t in terms] == [(2, 1.5, "response"), (1, 0.5, "response")]
    rows = weighted_terms(v, {2: 0.75, 1: 0.25}, [0.0, 1.0, -2.0])
    assert torch.allclose(torch.as_tensor(rows[0].coef), torch.tensor([0.0, 0.75, -1.5]))


def test_a_blend_steers_exactly_like_one_term_per_layer(tiny):
    torch.manual_seed(1)
    v = torch.randn(tiny.n_layers + 1, tiny.hidden_size)
    ids = tiny.encode(["ahoy there", "hello matey"])
    ids = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(x) for x in ids], batch_first=True)
    coefs = [0.5, 2.0]
    with steer(tiny, *weighted_terms(v, {1: 0.6, 2: 0.4}, coefs)):
        blended = tiny.model(ids).logits
    with steer(tiny, SteeringTerm(v, 1, [0.3, 1.2]), SteeringTerm(v, 2, [0.2, 0.8])):
        manual = tiny.model(ids).logits
    assert torch.allclose(blended, manual, atol=1e-5)


def test_sweep_config_accepts_auto_blends_and_mixed_lists():
    assert validate_config({"layers": "auto:3"}).layers == "auto:3"
    assert validate_config({"layers": ["auto", "auto:3"]}).layers == ["auto", "auto:3"]
    assert validate_config({"layers": ["4", 7, "auto:2"]}).layers == [4, 7, "auto:2"]
    assert validate_config({"layers": "7"}).layers == [7]  # a list, as the sweep reads it (it was the int 7)
    for bad, message in (("auto:0", "blends no layers"), (["auto", "top3"], "'top3' is not a layer, 'auto' or 'auto:K'"), ([], "at least one")):
        with pytest.raises(SweepError, match=message):
            validate_config({"layers": bad})


def test_summaries_sort_layer_indices_before_blends():
    records = [
        {
            "key": str(layer),
            "method": "vector",
            "layer": layer,
            "coef": 1.0,
            "question_id": 0,
            "trait": 50.0,
            "coherence": 90.0,
            "collapsed": False,
            "perplexity": 2.0,
        }
        for layer in ("auto:10", 12, "auto:2", 3)
    ]
    assert [r["layer"] for r in summarize(records)] == [3, 12, "auto:2", "auto:10"]


def test_a_sweep_blends_the_top_layers_summarises_reports_and_resumes(model_dir, tmp_path, capsys):
    argv = [
        "sweep",
        "--model",
        str(model_dir),
        "--trait",
        "pirate",
        "--out",
        str(tmp_path),
        "--name",
        "s",
        "--coefs=0,1",
        "--layers",
        "auto,auto:2",
        "--n-questions",
        "2",
        "--max-new-tokens",
        "4",
    ]
    assert run(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    folder = tmp_path / "s"
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    chosen = json.loads((folder / "layers.json").read_text())["chosen"]
    assert {r["layer"] for r in records} == {chosen, "auto:2"} and len(records) == 2 * 2 * 2
    assert any(r["key"].startswith("vector|Lauto:2|") for r in records)
    blend = json.loads((folder / "layers.json").read_text())["blends"]["auto:2"]
    assert sum(blend["weights"].values()) == pytest.approx(1.0)
    assert "layers auto:2: " in printed and "auto:2" in json.loads((folder / "config.json").read_text())["layer_blends"]
    summary = list(csv.DictReader((folder / "summary.csv").open()))
    assert [(r["layer"], r["coef"]) for r in summary] == [
        (str(chosen), "0.0000"),
        (str(chosen), "1.0000"),
        ("auto:2", "0.0000"),
        ("auto:2", "1.0000"),
    ]
    html = (folder / "report.html").read_text()
    assert "Blend auto:2:" in html and "vector · layers auto:2" in html
    before = (folder / "results.jsonl").read_text()
    assert run(argv) == 0, capsys.readouterr().err  # resumes: every key is done, nothing is generated twice
    assert (folder / "results.jsonl").read_text() == before


def test_auto_k_larger_than_the_model_is_one_line_before_any_extraction(model_dir, tmp_path, capsys, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("the vector was extracted before auto:K was checked")

    monkeypatch.setattr("personactl.experiment.extract", no_extraction)
    assert run(["sweep", "--model", str(model_dir), "--out", str(tmp_path), "--layers", "auto,auto:4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: auto:4 asks for 4 layers but the model has 3: use auto:1 to auto:3"
    assert run(["layers", "--model", str(model_dir), "--out", str(tmp_path), "--top", "4"]) == 2
    assert capsys.readouterr().err.strip() == "error: auto:4 asks for 4 layers but the model has 3: use auto:1 to auto:3"


def test_generate_auto_k_reads_layers_json_beside_the_vector(model_dir, vector_file, capsys):
    argv = ["generate", "--model", str(model_dir), "--vector", str(vector_file), "--prompt", "hi", "--max-new-tokens", "3"]
    assert run(argv + ["--layer", "auto:2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --layer auto:2 needs the measured effect per layer") and len(err.splitlines()) == 1
    assert "run `personactl layers` first" in err
    rows = [_row(1, 10.0, 90.0), _row(2, 30.0, 80.0), _row(3, -2.0, 99.0)]
    (vector_file.parent / "layers.json").write_text(json.dumps({"rows": [r.__dict__ for r in rows], "chosen": 2, "reason": "r"}))
    assert run(argv + ["--layer", "auto:4"]) == 2
    assert "auto:4 asks for 4 layers but the model has 3" in capsys.readouterr().err
    assert run(argv + ["--layer", "auto:2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["layers"] == [2, 1] and printed["weights"] == pytest.approx({"2": 0.75, "1": 0.25})
    assert run(argv + ["--layer", "auto:2", "--layer", "1"]) == 2
    assert "give it alone" in capsys.readouterr().err


def test_the_adaptive_layers_note_is_written_from_its_stored_numbers():
    import re
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "experiments"))
    import adaptive_layers  # noqa: PLC0415

    data = json.loads((root / "docs" / "experiments" / "adaptive_layers.json").read_text())
    section = re.search(r"<!-- adaptive_layers -->\n(.*?)<!-- /adaptive_layers -->", (root / "docs" / "experiments.md").read_text(), re.S)
    assert section and adaptive_layers.note({**data, "rows": data["raw"]}) in section.group(1)
    assert adaptive_layers.table(data["raw"]) == data["rows"]


def test_generate_auto_k_refuses_layers_measured_with_another_vector(model_dir, vector_file, capsys):
    from personactl import load_vector

    rows = [_row(1, 10.0, 90.0), _row(2, 30.0, 80.0), _row(3, -2.0, 99.0)]
    layers = {"rows": [r.__dict__ for r in rows], "chosen": 2, "reason": "r", "vector": "0123456789abcdef"}
    (vector_file.parent / "layers.json").write_text(json.dumps(layers))
    argv = [
        "generate",
        "--model",
        str(model_dir),
        "--vector",
        str(vector_file),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--layer",
        "auto:2",
        "--json",
    ]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "was measured with another vector" in err and len(err.splitlines()) == 1
    layers["vector"] = load_vector(vector_file).fingerprint()
    (vector_file.parent / "layers.json").write_text(json.dumps(layers))
    assert run(argv) == 0
