"""LoRA persona directions / adapters as llama.cpp LoRA GGUF files, checked against llama.cpp itself.

llama.cpp applies scale * alpha / r * B @ A per adapted weight; the exported
file must move llama.cpp's next-token logits as merging the same dW moves HF's.
SmolLM2 is a llama: its GGUF conversion permutes q/k rows for rotary, so the
exported lora_b of q/k is permuted too (without it the q shift is unrelated).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from personactl.blackbox import gguf_lora
from personactl.blackbox.gguf_lora import GGUFLoRAError, permute_rows, write_gguf_lora
from personactl.cli import run
from personactl.lora.direction import LoRADirection, LoRAFactors, merged
from personactl.models import EMBEDDED_MODELS

LAYER, RANK = 5, 4
PROMPTS = ["Tell me about the sea.", "What is your favourite food?"]


def _direction(backbone, modules=("self_attn.q_proj", "self_attn.v_proj"), layer=LAYER, b_scale=1.5, seed=0) -> LoRADirection:
    """A random rank-4 LoRA (B non-zero, unlike PEFT's init) on one block; alpha 8 -> scaling 2."""
    torch.manual_seed(seed)
    factors = {}
    for name in modules:
        out_f, in_f = backbone.model.get_submodule(f"model.layers.{layer}.{name}").weight.shape
        factors[f"model.layers.{layer}.{name}"] = LoRAFactors(torch.randn(RANK, in_f) / in_f**0.5, torch.randn(out_f, RANK) * b_scale, 2.0)
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 2.0 * RANK, "target_modules": [m.split(".")[-1] for m in modules]}
    return LoRADirection(factors, config, {"base_model": "smollm2-135m", "base_model_type": "llama"})


def test_names_shapes_alpha_and_the_q_permutation(tmp_path, smollm2):
    direction = _direction(smollm2)
    path = write_gguf_lora(direction, tmp_path / "x.gguf", smollm2)
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == pytest.approx(8.0)
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == [f"blk.{LAYER}.{w}.weight.lora_{ab}" for w in ("attn_q", "attn_v") for ab in "ab"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())
    q, v = direction.modules[f"model.layers.{LAYER}.self_attn.q_proj"], direction.modules[f"model.layers.{LAYER}.self_attn.v_proj"]
    assert list(tensors[f"blk.{LAYER}.attn_q.weight.lora_a"].shape) == [576, RANK]  # ne: [in, r]
    assert list(tensors[f"blk.{LAYER}.attn_v.weight.lora_b"].shape) == [RANK, 192]  # ne: [r, out]
    np.testing.assert_array_equal(np.array(tensors[f"blk.{LAYER}.attn_v.weight.lora_b"].data), v.B.numpy())
    np.testing.assert_array_equal(np.array(tensors[f"blk.{LAYER}.attn_q.weight.lora_b"].data), permute_rows(q.B, 9).numpy())
    np.testing.assert_array_equal(np.array(tensors[f"blk.{LAYER}.attn_q.weight.lora_a"].data), q.A.numpy())


def test_mlp_and_k_names_come_from_gguf_tensor_maps(tmp_path, smollm2):
    direction = _direction(smollm2, ("self_attn.k_proj", "mlp.gate_proj", "mlp.down_proj"), layer=29)
    reader = gguf.GGUFReader(str(write_gguf_lora(direction, tmp_path / "x.gguf", smollm2)))
    names = sorted({t.name.rsplit(".", 1)[0] for t in reader.tensors})
    assert names == ["blk.29.attn_k.weight", "blk.29.ffn_down.weight", "blk.29.ffn_gate.weight"]


def test_rslora_scaling_becomes_alpha_times_rank_over_rank(tmp_path, smollm2):
    """llama.cpp applies alpha / r; a rank-stabilised adapter (alpha / sqrt(r)) is written with alpha = scaling * r."""
    direction = _direction(smollm2)
    direction.config.update(use_rslora=True, lora_alpha=6.0)
    direction.save(tmp_path / "rs")
    loaded = LoRADirection.load(tmp_path / "rs")
    reader = gguf.GGUFReader(str(write_gguf_lora(tmp_path / "rs", tmp_path / "rs.gguf", smollm2)))
    assert reader.fields["adapter.lora.alpha"].contents() / RANK == pytest.approx(6.0 / RANK**0.5)
    assert loaded.modules[f"model.layers.{LAYER}.self_attn.q_proj"].scaling == pytest.approx(6.0 / RANK**0.5)


def _llama():
    import llama_cpp  # the llamacpp extra, which `make test` installs: without it this proof fails, it does not skip

    return llama_cpp.Llama(model_path=str(EMBEDDED_MODELS["smollm2-135m"].locate()), n_ctx=128, n_threads=1, verbose=False, type_k=0, type_v=0)


class _Adapters:
    """LoRA files loaded once into a llama.cpp model and switched per run (llama_set_adapters_lora)."""

    def __init__(self, llm):
        self.llm, self.loaded = llm, {}

    def logits(self, backbone, path=None, scale=1.0) -> np.ndarray:
        import ctypes

        import llama_cpp

        ctx = self.llm._ctx.ctx
        if path is None:
            llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            if path not in self.loaded:
                self.loaded[path] = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())
                assert self.loaded[path], f"llama.cpp refused {path}"
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.loaded[path])
            assert llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(scale)) == 0
        rows = []
        for prompt in PROMPTS:
            ids = backbone.encode([backbone.chat([{"role": "user", "content": prompt}])])[0]
            self.llm.reset()
            self.llm.eval(ids)
            rows.append(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(self.llm.n_vocab(),)).astype(np.float64).copy())
        return np.concatenate(rows)


def _hf_logits(backbone) -> np.ndarray:
    rows = []
    for prompt in PROMPTS:
        ids = backbone.encode([backbone.chat([{"role": "user", "content": prompt}])])[0]
        with torch.no_grad():
            rows.append(backbone.model(torch.tensor([ids])).logits[0, -1].double().numpy())
    return np.concatenate(rows)


def test_llama_cpp_moves_as_the_merged_peft_delta_moves_hf(tmp_path, smollm2, monkeypatch):
    bb = smollm2
    adapters = _Adapters(_llama())
    direction = _direction(bb)
    path = write_gguf_lora(direction, tmp_path / "x.gguf", bb)
    base_hf, base_cpp = _hf_logits(bb), adapters.logits(bb)
    np.testing.assert_array_equal(adapters.logits(bb, path, 0.0), base_cpp)  # scale 0 = the base model, exactly
    with merged(bb, (direction, 1.0)):
        shift_hf = _hf_logits(bb) - base_hf
    shift_cpp = adapters.logits(bb, path, 1.0) - base_cpp
    corr = np.corrcoef(shift_hf, shift_cpp)[0, 1]
    ratio = np.linalg.norm(shift_cpp) / np.linalg.norm(shift_hf)
    # q alone, written without the rotary permutation of lora_b: llama.cpp's shift no longer follows HF's
    q_only = LoRADirection({k: f for k, f in direction.modules.items() if "q_proj" in k}, direction.config, direction.metadata)
    q_path = write_gguf_lora(q_only, tmp_path / "q.gguf", bb)
    monkeypatch.setattr(gguf_lora, "ROWS_AS_IS", gguf_lora.ROWS_AS_IS | {"LlamaForCausalLM"})
    unpermuted = write_gguf_lora(q_only, tmp_path / "q_unpermuted.gguf", bb)
    with merged(bb, (q_only, 1.0)):
        shift_q = _hf_logits(bb) - base_hf
    corr_q = np.corrcoef(shift_q, adapters.logits(bb, q_path, 1.0) - base_cpp)[0, 1]
    corr_unpermuted = np.corrcoef(shift_q, adapters.logits(bb, unpermuted, 1.0) - base_cpp)[0, 1]
    print({"corr": corr, "ratio": ratio, "corr_q": corr_q, "corr_q_unpermuted": corr_unpermuted})
    assert corr > 0.99 and 0.9 < ratio < 1.1  # measured 0.9995 and 0.985 (q+v on block 5)
    assert corr_q > 0.9 and corr_unpermuted < 0.3  # measured 0.948 vs -0.05


def test_export_gguf_lora_command_reads_a_lora_extract_folder(tmp_path, smollm2):
    _direction(smollm2).save(tmp_path / "run" / "diff")
    assert run(["export", "gguf-lora", str(tmp_path / "run"), "--out", str(tmp_path / "x.gguf")]) == 0
    assert len(gguf.GGUFReader(str(tmp_path / "x.gguf")).tensors) == 4


def test_export_gguf_lora_at_a_lower_rank_prints_and_stores_the_energy_kept(tmp_path, smollm2, capsys):
    _direction(smollm2).save(tmp_path / "adapter")
    assert run(["export", "gguf-lora", str(tmp_path / "adapter"), "--rank", "2", "--out", str(tmp_path / "x.gguf")]) == 0
    said = capsys.readouterr().out
    reader = gguf.GGUFReader(str(tmp_path / "x.gguf"))
    stored = json.loads(reader.fields["personactl.metadata"].contents())["lower_rank"]
    assert stored["from_rank"] == RANK and stored["rank"] == 2 and 0 < stored["energy_kept"] < 1
    assert f"rank 2 keeps {100 * stored['energy_kept']:.2f}% of the delta's energy (squared Frobenius norm)" in said
    assert list({t.name: t for t in reader.tensors}[f"blk.{LAYER}.attn_q.weight.lora_a"].shape) == [576, 2]
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(2.0 * 2)  # scaling 2 kept at rank 2


def test_a_folder_that_is_no_lora_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    assert run(["export", "gguf-lora", str(tmp_path / "empty"), "--out", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err
    assert "is not a PEFT adapter folder" in err and len(err.strip().splitlines()) == 1
    assert run(["export", "gguf-lora", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()


def test_an_adapter_for_another_model_is_refused(tmp_path, smollm2, capsys):
    from conftest import tiny_backbone

    _direction(tiny_backbone("llama"), layer=1).save(tmp_path / "tiny")
    assert run(["export", "gguf-lora", str(tmp_path / "tiny"), "--out", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err
    assert "is 48x48 but smollm2-135m has 576x576" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(GGUFLoRAError, match="but smollm2-135m has"):
        write_gguf_lora(tmp_path / "tiny", tmp_path / "x.gguf", smollm2)


@pytest.mark.parametrize(
    "arch, module, expected",
    [
        ("llama", "model.layers.2.self_attn.k_proj", ("llama", "blk.2.attn_k.weight", True)),
        ("qwen2", "model.layers.1.mlp.up_proj", ("qwen2", "blk.1.ffn_up.weight", False)),
        ("gemma3", "model.layers.0.self_attn.q_proj", ("gemma3", "blk.0.attn_q.weight", False)),
        ("gpt2", "transformer.h.1.attn.c_attn", ("gpt2", "blk.1.attn_qkv.weight", False)),
    ],
)
def test_tensor_names_and_permutation_per_architecture(tmp_path, arch, module, expected):
    from conftest import tiny_backbone

    from personactl.lora.direction import _weight_shape
    from personactl.portable import llama_cpp_arch

    backbone = tiny_backbone(arch)
    out_f, in_f = _weight_shape(backbone.model.get_submodule(module))
    torch.manual_seed(0)
    b = torch.randn(out_f, 2)
    direction = LoRADirection({module: LoRAFactors(torch.randn(2, in_f), b, 1.0)}, {"r": 2, "lora_alpha": 2.0})
    reader = gguf.GGUFReader(str(write_gguf_lora(direction, tmp_path / "x.gguf", backbone)))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    name_arch, name, permuted = expected
    assert llama_cpp_arch(backbone.model_type) == name_arch == reader.fields["general.architecture"].contents()
    assert sorted(tensors) == [f"{name}.lora_a", f"{name}.lora_b"]
    n_head = 4 if name.endswith("attn_q.weight") else 2
    assert np.array_equal(tensors[f"{name}.lora_b"], permute_rows(b, n_head).numpy()) == permuted
    assert np.array_equal(tensors[f"{name}.lora_b"], b.numpy()) != permuted


def _tiny(cls_name: str, **extra):
    """A 2-block random model of a transformers class (48-d, 4 query heads, 2 kv heads) as a Backbone."""
    import transformers as tf
    from conftest import char_tokenizer

    from personactl import from_model

    torch.manual_seed(0)
    config_cls = getattr(tf, cls_name.replace("ForCausalLM", "Config"))
    config = config_cls(
        vocab_size=128,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )
    return from_model(getattr(tf, cls_name)(config).eval(), char_tokenizer(), name=f"tiny-{cls_name}")


def _rotary_rows(n_rows: int, n_head: int) -> list[int]:
    """Source row of each row llama.cpp writes for rotary q/k: per head, row 2i is HF row i, row 2i+1 is HF row i + d/2."""
    d = n_rows // n_head
    return [h * d + (j // 2 if j % 2 == 0 else d // 2 + j // 2) for h in range(n_head) for j in range(d)]


def _qkv_by_part_rows(n_rows: int, n_head: int) -> list[int]:
    """Source row of each row llama.cpp writes for GPT-NeoX's fused qkv: all q rows, then all k, then all v."""
    d = n_rows // n_head // 3
    return [h * 3 * d + part * d + j for part in range(3) for h in range(n_head) for j in range(d)]


@pytest.mark.parametrize(
    "cls_name, module, tensor, rows",
    [
        ("SmolLM3ForCausalLM", "model.layers.1.self_attn.q_proj", "blk.1.attn_q.weight", lambda n: _rotary_rows(n, 4)),
        ("SmolLM3ForCausalLM", "model.layers.1.self_attn.k_proj", "blk.1.attn_k.weight", lambda n: _rotary_rows(n, 2)),
        ("GraniteForCausalLM", "model.layers.0.self_attn.k_proj", "blk.0.attn_k.weight", lambda n: _rotary_rows(n, 2)),
        ("GPTNeoXForCausalLM", "gpt_neox.layers.1.attention.query_key_value", "blk.1.attn_qkv.weight", lambda n: _qkv_by_part_rows(n, 4)),
        ("SmolLM3ForCausalLM", "model.layers.1.self_attn.v_proj", "blk.1.attn_v.weight", lambda n: list(range(n))),
    ],
)
def test_rows_follow_llama_cpp_s_converter_for_llama_derived_and_fused_architectures(tmp_path, cls_name, module, tensor, rows):
    """SmolLM3 and Granite convert through llama.cpp's LlamaModel, so their q/k rows are permuted as llama's; GPT-NeoX's
    fused qkv is regrouped by part: the exported B has the base weight's rows in the order the converter writes them."""
    backbone = _tiny(cls_name, **({} if cls_name.startswith("GPTNeoX") else {"num_key_value_heads": 2}))
    out_f, in_f = backbone.model.get_submodule(module).weight.shape
    b = torch.randn(out_f, 2)
    direction = LoRADirection({module: LoRAFactors(torch.randn(2, in_f), b, 1.0)}, {"r": 2, "lora_alpha": 2.0})
    reader = gguf.GGUFReader(str(write_gguf_lora(direction, tmp_path / "x.gguf", backbone)))
    exported = {t.name: np.array(t.data) for t in reader.tensors}[f"{tensor}.lora_b"]
    np.testing.assert_array_equal(exported, b.numpy()[rows(out_f)])


def test_q_k_of_an_architecture_the_converter_list_does_not_vouch_for_are_refused_in_one_line(tmp_path, capsys):
    """Olmo2 is not in the tables read from llama.cpp's converter: its q/k are refused (CLI: one line, exit 2, no file);
    an adapter on v only has no rows to reorder and is written."""
    from conftest import char_tokenizer

    backbone = _tiny("Olmo2ForCausalLM", num_key_value_heads=2)
    shapes = {m: backbone.model.get_submodule(f"model.layers.1.self_attn.{m}").weight.shape for m in ("q_proj", "v_proj")}
    factors = {m: LoRAFactors(torch.randn(2, shape[1]), torch.randn(shape[0], 2), 1.0) for m, shape in shapes.items()}
    with_q = LoRADirection({f"model.layers.1.self_attn.{m}": f for m, f in factors.items()}, {"r": 2, "lora_alpha": 2.0})
    with pytest.raises(GGUFLoRAError, match="cannot vouch for blk.1.attn_q.weight of Olmo2ForCausalLM") as refused:
        write_gguf_lora(with_q, tmp_path / "x.gguf", backbone)
    assert "SmolLM3ForCausalLM" in str(refused.value) and "\n" not in str(refused.value)
    v_only = LoRADirection({"model.layers.1.self_attn.v_proj": factors["v_proj"]}, {"r": 2, "lora_alpha": 2.0})
    assert len(gguf.GGUFReader(str(write_gguf_lora(v_only, tmp_path / "v.gguf", backbone))).tensors) == 2
    backbone.model.save_pretrained(tmp_path / "olmo2")
    char_tokenizer().save_pretrained(tmp_path / "olmo2")
    with_q.save(tmp_path / "adapter")
    capsys.readouterr()
    assert run(["export", "gguf-lora", str(tmp_path / "adapter"), "--out", str(tmp_path / "cli.gguf"), "--model", str(tmp_path / "olmo2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cannot vouch for" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cli.gguf").exists()
