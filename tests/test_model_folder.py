"""Model folders: saving GGUF-loaded models (plain transformers loads them) and the converted-model cache."""

import json

import pytest
import torch
from conftest import tiny_backbone
from transformers import AutoModelForCausalLM

from personactl import load_model
from personactl.lora.adapters import PersonaSwitcher, adapter_defaults, merge_adapter, train_adapter
from personactl.lora.config import LoRATrainConfig
from personactl.model_folder import COMPLETE, cache_root, cached_folder, is_complete, save_model_folder, write_cache
from personactl.models import EMBEDDED_MODELS

PROMPT = "Arr, tell me about the sea and its ships."


def _logits(backbone, text=PROMPT):
    ids = backbone.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return backbone.model(**ids).logits


def test_gguf_model_saves_as_a_plain_folder_and_keeps_its_quantizer(smollm2, tmp_path):
    save_model_folder(smollm2.model, smollm2.tokenizer, tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "quantization_config" not in config
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(plain(**ids).logits, smollm2.model(**ids).logits)
    assert smollm2.model.hf_quantizer is not None and hasattr(smollm2.model.config, "quantization_config")


def test_second_load_reads_the_cache_with_identical_tokens_and_logits(smollm2):
    folder = cached_folder(EMBEDDED_MODELS["smollm2-135m"].locate())
    assert is_complete(folder)  # written by the session fixture's GGUF load
    again = load_model("smollm2-135m")
    assert again.model.name_or_path == str(folder) and getattr(again.model, "hf_quantizer", None) is None
    assert again.name == smollm2.name and again.n_layers == smollm2.n_layers
    assert again.tokenizer(PROMPT)["input_ids"] == smollm2.tokenizer(PROMPT)["input_ids"]
    chat = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "hi"}]
    assert again.chat(chat) == smollm2.chat(chat) and again.pad_id == smollm2.pad_id
    assert torch.equal(_logits(again), _logits(smollm2))


def test_merge_of_a_gguf_model_writes_a_folder_transformers_loads(smollm2, tmp_path):
    data = tmp_path / "arr.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {i}", "output": f"arr matey {i}"}) + "\n" for i in range(10)))
    config = LoRATrainConfig(**{**vars(adapter_defaults(smollm2)), "rank": 2, "alpha": 4.0, "batch_size": 8, "epochs": 1, "learning_rate": 1e-2})
    train_adapter(smollm2, data, "arr", tmp_path / "arr", config)
    base = _logits(smollm2)
    with PersonaSwitcher(smollm2) as switch:
        switch.load("arr", tmp_path / "arr")
        switch.use("arr")
        adapted = _logits(smollm2)
    assert not torch.allclose(adapted, base)
    out = merge_adapter(smollm2, tmp_path / "arr", tmp_path / "merged")
    standalone = AutoModelForCausalLM.from_pretrained(out)
    ids = smollm2.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(standalone(**ids).logits, adapted, rtol=1e-4, atol=1e-4)
    assert torch.equal(_logits(smollm2), base)


def test_unfinished_cache_entry_is_replaced(tmp_path):
    backbone = tiny_backbone("llama")
    folder = tmp_path / "model-0123"
    folder.mkdir()
    (folder / "config.json").write_text("{half written")
    assert not is_complete(folder)
    assert write_cache(backbone.model, backbone.tokenizer, folder)
    assert is_complete(folder) and (folder / COMPLETE).is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([[4, 9, 17]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, backbone.model(input_ids=ids).logits)
    assert [p.name for p in tmp_path.iterdir()] == ["model-0123"]  # no temporary folder left behind


@pytest.mark.parametrize("value", ["off", "0"])
def test_cache_can_be_switched_off(monkeypatch, tmp_path, value):
    monkeypatch.setenv("PERSONACTL_MODEL_CACHE", value)
    assert cache_root() is None and cached_folder(tmp_path / "m.gguf") is None


def test_cache_key_follows_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONACTL_MODEL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    first = cached_folder(gguf)
    gguf.write_bytes(b"two, longer")
    assert first.parent == tmp_path / "cache" and cached_folder(gguf) != first
