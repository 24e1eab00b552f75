"""llama.cpp control vectors: file layout, repeng files, bad inputs, and the layer index proven against llama.cpp itself.

Our layer l (= hidden_states[l], the output of block l-1) is llama.cpp's
direction.(l-1). The proof steers HF at layer l and llama.cpp with the exported
file, and compares the next-token logit shifts: they agree at direction.(l-1)
and clearly less at the off-by-one direction.l.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from personactl import PersonaVector, SteeringTerm, steer
from personactl.blackbox.cvec import set_control_vector
from personactl.cli import run
from personactl.errors import IncompatibleVectorError
from personactl.models import EMBEDDED_MODELS
from personactl.portable import ControlVectorError, read_control_vector, write_control_vector


def _vector(n_layers: int = 30, hidden: int = 576, seed: int = 0) -> PersonaVector:
    torch.manual_seed(seed)
    return PersonaVector(torch.randn(n_layers + 1, hidden), trait="pirate", model="smollm2-135m")


def _tensors(path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type, list(t.shape), np.array(t.data)) for t in reader.tensors}, reader


def test_layer_l_is_written_as_direction_l_minus_1_scaled_by_coef(tmp_path):
    vector = _vector()
    path = write_control_vector(vector, tmp_path / "pirate.gguf", layers=range(18, 21), coef=2.5)
    tensors, reader = _tensors(path)
    assert sorted(tensors) == ["direction.17", "direction.18", "direction.19"]
    for layer in (18, 19, 20):
        kind, shape, data = tensors[f"direction.{layer - 1}"]
        assert kind == gguf.GGMLQuantizationType.F32 and shape == [576]
        np.testing.assert_allclose(data, 2.5 * vector.directions[layer].numpy(), rtol=1e-6)
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 3
    back = read_control_vector(path)
    assert back.extra["layers"] == [18, 19, 20] and back.trait == "pirate"
    torch.testing.assert_close(back.directions[18:21], 2.5 * vector.directions[18:21])
    assert back.directions[:18].abs().sum() == 0


def test_all_layers_skips_layer_1_and_zero_layers(tmp_path):
    vector = _vector()
    vector.directions[5] = 0
    tensors, _ = _tensors(write_control_vector(vector, tmp_path / "v.gguf"))
    assert sorted(int(n.split(".")[1]) for n in tensors) == [n for n in range(1, 30) if n != 4]


@pytest.mark.parametrize("layers, message", [([1, 5], "layer 1 cannot be exported"), ([0], "layer 0 cannot"), ([31], "out of range")])
def test_layers_llama_cpp_cannot_steer_are_refused(tmp_path, layers, message):
    with pytest.raises(ControlVectorError, match=message):
        write_control_vector(_vector(), tmp_path / "v.gguf", layers=layers)
    assert not (tmp_path / "v.gguf").exists()


def _repeng_file(path, directions: dict[int, np.ndarray], hint: str = "llama") -> None:
    """What repeng's ControlVector.export_gguf writes."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, tensor in directions.items():
        writer.add_tensor(f"direction.{layer}", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_repeng_file_loads_with_direction_n_at_our_layer_n_plus_1(tmp_path, smollm2):
    rng = np.random.default_rng(0)
    directions = {n: rng.standard_normal(576).astype(np.float32) for n in range(5, 29)}
    _repeng_file(tmp_path / "repeng.gguf", directions)
    vector = read_control_vector(tmp_path / "repeng.gguf", smollm2)
    assert vector.directions.shape == (31, 576) and vector.model == "smollm2-135m" and vector.method == "imported"
    for n, values in directions.items():
        np.testing.assert_array_equal(vector.directions[n + 1].numpy(), values)
    assert vector.extra["source_format"] == "llamacpp" and vector.extra["model_hint"] == "llama"
    assert vector.extra["assumed"].startswith("key N is the output of decoder block N (our layer N+1); operation add; no normalisation")
    vector.check_compatible(smollm2)


def test_import_cvec_command_writes_a_persona_vector(tmp_path):
    _repeng_file(tmp_path / "r.gguf", {10: np.ones(576, np.float32)})
    assert run(["import", "vector", "--from", "llamacpp", str(tmp_path / "r.gguf"), "--out", str(tmp_path / "v.safetensors")]) == 0
    from personactl import load_vector

    vector = load_vector(tmp_path / "v.safetensors")
    assert vector.directions[11].sum() == 576 and vector.extra["layers"] == [11]


@pytest.mark.parametrize(
    "directions, message",
    [
        ({10: np.ones(48, np.float32)}, "hidden size 48 but"),
        ({30: np.ones(576, np.float32)}, "made for a deeper model"),
        ({0: np.ones(576, np.float32), 3: np.ones(576, np.float32)}, "direction.0 is invalid"),
    ],
)
def test_control_vectors_that_do_not_fit_are_refused_in_one_line(tmp_path, capsys, directions, message):
    _repeng_file(tmp_path / "bad.gguf", directions)
    assert run(["import", "vector", "--from", "llamacpp", str(tmp_path / "bad.gguf"), "--out", str(tmp_path / "v.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "v.safetensors").exists()


def test_a_model_gguf_is_not_a_control_vector(tmp_path, capsys):
    model_file = EMBEDDED_MODELS["smollm2-135m"].locate()
    assert run(["import", "vector", "--from", "llamacpp", str(model_file), "--out", str(tmp_path / "v.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "is not a control vector" in err and "'llama'" in err and not (tmp_path / "v.safetensors").exists()
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        read_control_vector(tmp_path / "junk.gguf")


def test_export_refuses_a_vector_for_another_model(tmp_path, capsys, vector_file):
    assert run(["export", "vector", "--format", "llamacpp", str(vector_file), "--out", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err
    assert "hidden size 48" in err and not (tmp_path / "x.gguf").exists()


def test_export_refuses_a_vector_of_another_depth(tmp_path, smollm2):
    with pytest.raises(IncompatibleVectorError, match="covers 12 layers"):
        write_control_vector(_vector(12, 576), tmp_path / "x.gguf", backbone=smollm2)
    assert not (tmp_path / "x.gguf").exists()


def test_export_cvec_command(tmp_path):
    vector = _vector()
    vector.save(tmp_path / "v.safetensors")
    assert (
        run(
            [
                "export",
                "vector",
                "--format",
                "llamacpp",
                str(tmp_path / "v.safetensors"),
                "--out",
                str(tmp_path / "p.gguf"),
                "--layers",
                "18-28",
                "--coef",
                "2",
            ]
        )
        == 0
    )
    tensors, _ = _tensors(tmp_path / "p.gguf")
    assert sorted(int(n.split(".")[1]) for n in tensors) == list(range(17, 28))
    assert (
        run(["export", "vector", "--format", "llamacpp", str(tmp_path / "v.safetensors"), "--out", str(tmp_path / "q.gguf"), "--layers", "1-3"]) == 2
    )
    assert not (tmp_path / "q.gguf").exists()


# --- the layer index, proven against llama.cpp --------------------------------------------------------------


def _llama(**kwargs):
    import llama_cpp  # the llamacpp extra, which `make test` installs: without it this proof fails, it does not skip

    return llama_cpp.Llama(
        model_path=str(EMBEDDED_MODELS["smollm2-135m"].locate()), n_ctx=128, n_threads=1, verbose=False, type_k=0, type_v=0, **kwargs
    )  # f32 KV cache: less noise against HF's float32


def _last_logits(llm, ids) -> np.ndarray:
    import llama_cpp

    llm.reset()
    llm.eval(ids)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)).astype(np.float64).copy()


def test_off_by_one_llama_cpp_direction_l_minus_1_matches_hf_layer_l(tmp_path, smollm2):
    """Same random vector, same prompt: HF steered at layer l vs llama.cpp with the exported file.

    The coefficient is the residual norm at that layer (large, so that the shift
    dwarfs the Q4/Q8 arithmetic noise between the two runtimes)."""
    bb = smollm2
    llm = _llama()
    ids = bb.encode([bb.chat([{"role": "user", "content": "Tell me about the sea."}])])[0]
    x = torch.tensor([ids])
    with torch.no_grad():
        out = bb.model(x, output_hidden_states=True)
    base_hf = out.logits[0, -1].double().numpy()
    base_cpp = _last_logits(llm, ids)
    torch.manual_seed(0)
    results = {}
    for layer in (3, 20):
        direction = torch.randn(bb.hidden_size)
        directions = torch.zeros(bb.n_layers + 1, bb.hidden_size)
        directions[layer] = direction / direction.norm() * float(out.hidden_states[layer][0].norm(dim=-1).median())
        vector = PersonaVector(directions, trait="random", model=bb.name)
        with torch.no_grad(), steer(bb, SteeringTerm(vector, layer, 1.0)):
            shift_hf = bb.model(x).logits[0, -1].double().numpy() - base_hf
        right = write_control_vector(vector, tmp_path / f"right{layer}.gguf", layers=[layer], backbone=bb)
        wrong = tmp_path / f"wrong{layer}.gguf"  # what an off-by-one exporter would write: direction.l
        _repeng_file(wrong, {layer: vector.directions[layer].numpy()})
        shifts = {}
        for name, path in (("right", right), ("wrong", wrong)):
            set_control_vector(llm, path)
            shifts[name] = _last_logits(llm, ids) - base_cpp
        set_control_vector(llm, None)
        results[layer] = {k: (np.corrcoef(shift_hf, s)[0, 1], np.linalg.norm(s - shift_hf) / np.linalg.norm(shift_hf)) for k, s in shifts.items()}
    print(results)
    np.testing.assert_array_equal(_last_logits(llm, ids), base_cpp)  # cleared: the unsteered model again
    for layer, r in results.items():
        assert r["right"][0] > 0.99 and r["right"][1] < 0.1, (layer, r)  # measured 0.9986 / 0.016 (l=3), 0.9986 / 0.044 (l=20)
        assert r["wrong"][0] < 0.9 and r["wrong"][1] > 0.3, (layer, r)  # measured 0.80 / 0.45, 0.78 / 1.55


@pytest.mark.parametrize("arch, hint", [("llama", "llama"), ("qwen2", "qwen2"), ("gemma3", "gemma3"), ("gpt2", "gpt2")])
def test_model_hint_is_llama_cpp_architecture_name_and_round_trip_is_exact(tmp_path, arch, hint):
    from conftest import tiny_backbone

    backbone = tiny_backbone(arch)
    vector = _vector(3, 48)
    path = write_control_vector(vector, tmp_path / "v.gguf", backbone=backbone)
    _, reader = _tensors(path)
    assert reader.fields["controlvector.model_hint"].contents() == hint
    back = read_control_vector(path, backbone)
    torch.testing.assert_close(back.directions[2:], vector.directions[2:])
    assert back.directions[:2].abs().sum() == 0 and back.extra["layers"] == [2, 3]


def test_a_file_made_for_another_architecture_loads_with_a_note(tmp_path, capsys):
    _repeng_file(tmp_path / "g.gguf", {4: np.ones(576, np.float32)}, hint="gemma3")
    assert run(["import", "vector", "--from", "llamacpp", str(tmp_path / "g.gguf"), "--out", str(tmp_path / "v.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "made for a 'gemma3' model" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "v.safetensors").exists()
