import pytest
import torch
from conftest import char_tokenizer, tiny_model
from torch import nn

from personactl import ArchitectureError, LayerError, ModelLoadError, from_model, load_model
from personactl.models import find_layers, plain_chat


def test_layers_found_for_every_tiny_architecture(tiny):
    assert tiny.n_layers == 3 and tiny.hidden_size == 48
    assert isinstance(tiny.layers, nn.ModuleList)
    assert tiny.block(1) is tiny.layers[0] and tiny.block(3) is tiny.layers[2]


def test_layer_range_is_checked(tiny):
    assert tiny.check_layer(0) == 0
    with pytest.raises(LayerError, match="valid layers are 1..3"):
        tiny.block(0)
    with pytest.raises(LayerError, match="out of range"):
        tiny.check_layer(4)


class _Renamed(nn.Module):
    """An unknown architecture whose blocks sit at an unusual path."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"model_type": "mystery"})()
        self.trunk = nn.Module()
        self.trunk.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))


def test_unknown_architecture_is_guessed_or_named_explicitly():
    model = _Renamed()
    assert find_layers(model) is model.trunk.blocks
    assert find_layers(model, "trunk.blocks") is model.trunk.blocks
    with pytest.raises(ArchitectureError, match="no module list at 'model.layers'"):
        find_layers(model, "model.layers")


def test_architecture_without_blocks_says_how_to_point_at_them():
    flat = nn.Linear(2, 2)
    flat.config = type("Config", (), {"model_type": "flat"})()
    with pytest.raises(ArchitectureError, match="layers_path"):
        find_layers(flat)


def test_chat_uses_the_template_or_a_plain_fallback():
    messages = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hi"}]
    templated = from_model(tiny_model("llama"), char_tokenizer(), "t")
    assert templated.chat(messages) == "<system>Be a pirate.</s><user>Hi</s><assistant>"
    plain = from_model(tiny_model("gpt2"), char_tokenizer(None), "p")
    assert plain.chat(messages) == plain_chat(messages)  # this tokenizer adds no BOS of its own
    assert plain.chat(messages).endswith("User: Hi\n\nAssistant:")


def test_template_without_system_role_folds_it_into_the_user_turn():
    strict = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    backbone = from_model(tiny_model("llama"), char_tokenizer(strict), "strict")
    text = backbone.chat([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text.startswith("<user>S\n\nU")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("does/not-exist", "hub"),
        ("not a model!", "not a model alias"),
        ("missing.gguf", "GGUF file not found"),
    ],
)
def test_bad_model_specs_are_clear_errors(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec)


def test_an_unknown_hub_id_fails_clearly_without_opening_a_connection(monkeypatch):
    """The tests run with HF_HUB_OFFLINE=1 (conftest): an unknown id is looked up in the local cache only."""
    import socket

    from huggingface_hub import constants

    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ModelLoadError, match="could not load 'does/not-exist' from the Hugging Face hub or its local cache"):
        load_model("does/not-exist")
    assert constants.HF_HUB_OFFLINE and attempts == []


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_local_folder_loads_with_dtype(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    backbone = load_model(str(tmp_path), dtype="bfloat16", device="cpu")
    assert backbone.dtype == torch.bfloat16 and backbone.n_layers == 3 and backbone.model_type == "qwen2"
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tmp_path), dtype="float8")
