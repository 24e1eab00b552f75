"""Portable vectors: every format round-trips, records its convention, checks what it can, and says what it assumed.

The equivalence with the libraries themselves (the same logit shift through repeng, steering-vectors and
personactl) is in test_portable_equivalence.py.
"""

from __future__ import annotations

import json
import warnings

import gguf
import numpy as np
import pytest
import torch
from conftest import tiny_backbone
from safetensors import safe_open
from safetensors.torch import save_file

from personactl import PersonaVector, export_vector, import_vector, load_vector
from personactl.cli import run
from personactl.errors import LayerError
from personactl.layer_list import layer_numbers, parse_layers
from personactl.portable import FORMATS, PortableFormatError, config_fingerprint, family, model_config
from personactl.portable.convention import RECORD_KEY

FILES = {"llamacpp": "v.gguf", "repeng": "v.gguf", "steering-vectors": "v.pt", "persona-vectors": "v.pt", "safetensors": "v.safetensors"}


@pytest.fixture(scope="module")
def llama():
    return tiny_backbone("llama")


def _vector(n_layers: int = 3, hidden: int = 48, seed: int = 0) -> PersonaVector:
    torch.manual_seed(seed)
    return PersonaVector(torch.randn(n_layers + 1, hidden), trait="pirate", model="tiny-llama")


def _recorded(path, fmt: str) -> dict:
    """The convention JSON as the file itself stores it (read with the format's own library, not personactl)."""
    if fmt in ("llamacpp", "repeng"):
        return json.loads(gguf.GGUFReader(str(path)).fields[RECORD_KEY].contents())
    if fmt == "steering-vectors":
        return json.loads(torch.load(path, weights_only=True)[RECORD_KEY])
    if fmt == "persona-vectors":
        return json.loads((path.parent / (path.name + ".json")).read_text())
    with safe_open(str(path), framework="pt") as fh:
        return json.loads(fh.metadata()[RECORD_KEY])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_and_records_its_convention(tmp_path, llama, fmt):
    vector = _vector()
    path = export_vector(vector, tmp_path / FILES[fmt], fmt, layers=[2, 3], coef=2.5, backbone=llama)
    record = _recorded(path, fmt)
    assert record["hook"] == "block_output" and "model.layers[N]" in record["hook_means"]
    assert record["operation"] == "add" and record["normalisation"] == "none" and record["coef"] == 2.5
    assert record["numbering"] == FORMATS[fmt].numbering and record["layers"] == [2, 3]
    assert record["model"] == "tiny-llama" and record["model_type"] == "llama"
    assert record["config"] == {"model_type": "llama", "hidden_size": 48, "num_hidden_layers": 3, "vocab_size": 128}
    assert record["config_fingerprint"] == config_fingerprint(model_config(llama)) and len(record["config_fingerprint"]) == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model: no note
        back = import_vector(path, fmt, llama)
    assert back.directions.shape == (4, 48) and back.trait == "pirate" and back.model == "tiny-llama"
    torch.testing.assert_close(back.directions[2:], 2.5 * vector.directions[2:])
    assert back.directions[:2].abs().sum() == 0
    assert back.extra["assumed"] == "nothing: the source records its convention" and back.extra["source_format"] == fmt


def test_block_formats_key_our_layer_l_as_l_minus_1_and_hidden_state_formats_as_l(tmp_path, llama):
    vector = _vector()
    cvec = gguf.GGUFReader(str(export_vector(vector, tmp_path / "a.gguf", "repeng", layers=[1, 3], backbone=llama)))
    assert sorted(t.name for t in cvec.tensors) == ["direction.0", "direction.2"]
    np.testing.assert_array_equal(np.array(cvec.tensors[0].data), vector.directions[1].numpy())
    sv = torch.load(export_vector(vector, tmp_path / "s.pt", "steering-vectors", layers=[1, 3], backbone=llama), weights_only=True)
    assert sorted(sv["layer_activations"]) == [0, 2] and sv["layer_type"] == "decoder_block"
    torch.testing.assert_close(sv["layer_activations"][2], vector.directions[3])
    full = torch.load(export_vector(vector, tmp_path / "p.pt", "persona-vectors", backbone=llama), weights_only=True)
    torch.testing.assert_close(full, vector.directions)  # all rows, the embedding row 0 included: persona_vectors' own tensor
    with safe_open(str(export_vector(vector, tmp_path / "l.safetensors", "safetensors", layers=[3], backbone=llama)), framework="pt") as fh:
        assert list(fh.keys()) == ["layers.3"] and fh.metadata()["format"] == "personactl.layers/1"


def test_a_foreign_source_states_what_was_assumed(llama, interop):
    cv = interop.repeng.ControlVector(model_type="llama", directions={1: np.ones(48, np.float32), -1: np.full(48, 2.0, np.float32)})
    vector = import_vector(cv, "repeng", llama)
    assert vector.extra["layers"] == [2, 3] and float(vector.directions[3, 0]) == 2.0  # -1: the last block, our layer 3
    assert vector.extra["assumed"].startswith("key N is the output of decoder block N (our layer N+1); operation add; no normalisation")
    sv = import_vector({0: torch.ones(48)}, "steering-vectors", llama)  # the bare layer_activations dict
    assert sv.extra["layers"] == [1] and "steering-vectors records none" in sv.extra["assumed"]
    loose = import_vector(torch.zeros(4, 48), "persona-vectors")
    assert loose.n_layers == 3 and "no model given" in loose.extra["assumed"]


def test_negative_layer_ids_need_the_model(llama):
    with pytest.raises(PortableFormatError, match="count back from the last block: give the model"):
        import_vector({"model_type": "llama", "directions": {-1: np.ones(48)}}, "repeng")


@pytest.mark.parametrize(
    "hint, model_type, note",
    [
        ("gemma3_text", "gemma3", False),
        ("gemma3", "gemma3_text", False),
        ("mistral", "llama", False),
        ("gptneox", "gpt_neox", False),
        ("llama", "gemma3", True),
    ],
)
def test_hf_model_type_and_gguf_architecture_name_are_one_family(hint, model_type, note):
    assert (family(hint) != family(model_type)) is note


def test_a_repeng_file_for_gemma3_text_loads_on_gemma3_without_a_note(tmp_path, interop):
    """What repeng writes for Gemma-3 (its HF model type) against llama.cpp's name: one family, no spurious note."""
    gemma = tiny_backbone("gemma3")
    interop.repeng.ControlVector(model_type="gemma3_text", directions={1: np.ones(48, np.float32)}).export_gguf(str(tmp_path / "g.gguf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vector = import_vector(tmp_path / "g.gguf", "repeng", gemma)
    assert vector.extra["model_hint"] == "gemma3_text" and vector.extra["layers"] == [2]
    interop.repeng.ControlVector(model_type="qwen2", directions={1: np.ones(48, np.float32)}).export_gguf(str(tmp_path / "q.gguf"))
    with pytest.warns(UserWarning, match="made for a 'qwen2' model, tiny-gemma3 is 'gemma3'"):
        import_vector(tmp_path / "q.gguf", "repeng", gemma)


def test_a_vector_for_another_model_of_the_same_shape_loads_with_a_note(tmp_path, llama):
    path = export_vector(_vector(), tmp_path / "v.safetensors", "safetensors", backbone=tiny_backbone("qwen2"))
    with pytest.warns(UserWarning, match="another model of the same shape \\(model_type 'qwen2' vs 'llama'\\)"):
        import_vector(path, "safetensors", llama)


# --- the command line, and its bad inputs: one line, exit 2 ----------------------------------------------------


def test_export_and_import_commands(tmp_path, model_dir, vector_file, capsys):
    for fmt, name in FILES.items():
        out = tmp_path / fmt / name
        assert run(["export", "vector", str(vector_file), "--format", fmt, "--out", str(out), "--layers", "2-3", "--model", str(model_dir)]) == 0
        assert run(["import", "vector", str(out), "--from", fmt, "--out", str(tmp_path / fmt / "back.safetensors"), "--model", str(model_dir)]) == 0
        printed = capsys.readouterr().out
        assert "use it with:" in printed and "assumed: nothing: the source records its convention" in printed
        back = load_vector(tmp_path / fmt / "back.safetensors")
        torch.testing.assert_close(back.directions[2:], load_vector(vector_file).directions[2:])
        assert back.extra["layers"] == [2, 3]


def _one_line_error(capsys, argv, message):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_unknown_formats_are_refused(tmp_path, vector_file, capsys):
    _one_line_error(capsys, ["export", "vector", str(vector_file), "--format", "onnx", "--out", str(tmp_path / "x")], "unknown vector format 'onnx'")
    _one_line_error(
        capsys, ["import", "vector", str(vector_file), "--from", "pickle", "--out", str(tmp_path / "x.safetensors")], "use one of llamacpp, repeng"
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.safetensors").exists()


def test_a_vector_of_another_hidden_size_is_refused(tmp_path, model_dir, capsys):
    export_vector(_vector(3, 64), tmp_path / "wide.pt", "steering-vectors")
    _one_line_error(
        capsys,
        [
            "import",
            "vector",
            str(tmp_path / "wide.pt"),
            "--from",
            "steering-vectors",
            "--out",
            str(tmp_path / "x.safetensors"),
            "--model",
            str(model_dir),
        ],
        "hidden size 64 but",
    )
    PersonaVector(torch.randn(4, 64)).save(tmp_path / "wide.safetensors")
    _one_line_error(
        capsys,
        ["export", "vector", str(tmp_path / "wide.safetensors"), "--format", "repeng", "--out", str(tmp_path / "x.gguf"), "--model", str(model_dir)],
        "hidden size 64",
    )
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize(
    "maker, fmt, message",
    [
        ("gguf", "steering-vectors", "is not a torch .pt file"),
        ("pt", "llamacpp", "is not a readable GGUF file"),
        ("pt", "safetensors", "is not a readable safetensors file"),
        ("personactl", "safetensors", "is personactl's own vector file"),
        ("tensor", "steering-vectors", "holds a Tensor, not a steering-vectors dict"),
        ("steering", "persona-vectors", "holds dict, not the [n_layers + 1, hidden] tensor"),
        ("object", "steering-vectors", "holds pickled objects"),
        ("mlp", "steering-vectors", "layer_type 'mlp' hooks inside a block"),
    ],
)
def test_a_file_of_another_format_is_refused(tmp_path, vector_file, capsys, maker, fmt, message):
    path = tmp_path / "other"
    if maker == "gguf":
        export_vector(load_vector(vector_file), path, "llamacpp")
    elif maker == "pt":
        export_vector(load_vector(vector_file), path, "persona-vectors")
    elif maker == "personactl":
        load_vector(vector_file).save(path := tmp_path / "v.safetensors")
    elif maker == "tensor":
        torch.save(torch.zeros(4, 48), path)
    elif maker == "steering":
        export_vector(load_vector(vector_file), path, "steering-vectors")
    elif maker == "object":
        torch.save({"layer_activations": {0: torch.zeros(48)}, "note": PortableFormatError("an object")}, path)
    else:
        torch.save({"layer_activations": {0: torch.zeros(48)}, "layer_type": "mlp"}, path)
    _one_line_error(capsys, ["import", "vector", str(path), "--from", fmt, "--out", str(tmp_path / "x.safetensors")], message)
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_layers_are_refused(tmp_path, model_dir, vector_file, capsys):
    torch.save(torch.randn(3, 48), tmp_path / "short.pt")  # persona_vectors' tensor without one of its n_layers + 1 rows
    _one_line_error(
        capsys,
        [
            "import",
            "vector",
            str(tmp_path / "short.pt"),
            "--from",
            "persona-vectors",
            "--out",
            str(tmp_path / "x.safetensors"),
            "--model",
            str(model_dir),
        ],
        "made for a model of 2 blocks, tiny-llama",
    )
    path = export_vector(load_vector(vector_file), tmp_path / "layers.safetensors", "safetensors", layers=[2, 3])
    with safe_open(str(path), framework="pt") as fh:
        meta, kept = fh.metadata(), {"layers.2": fh.get_tensor("layers.2")}
    save_file(kept, str(tmp_path / "cut.safetensors"), metadata=meta)  # the header still lists layer 3
    _one_line_error(
        capsys,
        ["import", "vector", str(tmp_path / "cut.safetensors"), "--from", "safetensors", "--out", str(tmp_path / "x.safetensors")],
        "layers [3] are recorded",
    )
    _one_line_error(
        capsys,
        ["export", "vector", str(vector_file), "--format", "repeng", "--out", str(tmp_path / "x.gguf"), "--layers", "2-9", "--model", str(model_dir)],
        "layer 4 is out of range",
    )
    _one_line_error(
        capsys,
        [
            "export",
            "vector",
            str(vector_file),
            "--format",
            "llamacpp",
            "--out",
            str(tmp_path / "x.gguf"),
            "--layers",
            "1,2",
            "--model",
            str(model_dir),
        ],
        "layer 1 cannot be exported to llama.cpp",
    )
    export_vector(_vector(5), tmp_path / "deep.gguf", "repeng", layers=[5])
    _one_line_error(
        capsys,
        ["import", "vector", str(tmp_path / "deep.gguf"), "--from", "repeng", "--out", str(tmp_path / "x.safetensors"), "--model", str(model_dir)],
        f"steers our layer 5 (repeng index 4) but {model_dir.name} has layers 1..3: it was made for a deeper model",
    )
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.gguf").exists()


# --- one layer-list syntax everywhere --------------------------------------------------------------------------


def test_layer_lists_parse_one_way():
    assert layer_numbers("9,10,11") == layer_numbers("9 10 11") == layer_numbers(["9", "10,11"]) == layer_numbers("9-11") == [9, 10, 11]
    assert layer_numbers("18,20,24-26,20") == [18, 20, 24, 25, 26]
    assert parse_layers("auto:3,8-9", words=("auto", "auto:")) == ["auto:3", 8, 9]
    for bad, message in (
        ("eleven", "is not a layer"),
        ("11-9", "a range goes up"),
        ("auto", "is not a layer"),
        (",", "is empty"),
        ("-1", "is not a layer"),
    ):
        with pytest.raises(LayerError, match=message):
            layer_numbers(bad)


def test_generate_takes_the_layer_list_syntax_of_sweep_and_export(model_dir, vector_file, capsys):
    base = ["generate", "--model", str(model_dir), "--vector", str(vector_file), "--prompt", "hi", "--json", "--max-new-tokens", "2"]
    for layers, expected in ((["1,2,3"], [1, 2, 3]), (["1-2"], [1, 2]), (["1", "3"], [1, 3])):
        assert run(base + [arg for value in layers for arg in ("--layer", value)]) == 0
        assert json.loads(capsys.readouterr().out)["layers"] == expected
    _one_line_error(capsys, base + ["--layer", "3-1"], "--layer 3-1: a range goes up")
    _one_line_error(capsys, base + ["--layer", "auto,2"], "--layer auto chooses its layers itself")
    assert run(["monitor", "--model", str(model_dir), "--vector", str(vector_file), "--prompt", "hi", "--json", "--layer", "2-3"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == [2, 3]


def test_sweep_layers_take_ranges():
    from personactl.cli.sweeps import _layer_specs

    assert _layer_specs("8-10,auto:3") == [8, 9, 10, "auto:3"] and _layer_specs("auto") == "auto"
