"""The CLI's error boundary: each user mistake is one `error:` line and exit code 2, found before long work starts;
real bugs keep their traceback."""

import errno
import io
import json
import os

import pytest
import torch

from personactl.cli import run
from personactl.lora.direction import LoRADirection, LoRAFactors


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("personactl.cli._common._load", refuse)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry with one small synthetic adapter, 'arr'."""
    root = tmp_path / "registry"
    monkeypatch.setenv("PERSONACTL_ADAPTERS", str(root))
    torch.manual_seed(0)
    module = "model.layers.0.self_attn.q_proj"
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    LoRADirection(
        {module: LoRAFactors(torch.randn(2, 48), torch.randn(48, 2), 2.0)},
        config,
        {"name": "arr", "base_model": "tiny-llama", "base_model_type": "llama"},
    ).save(root / "arr")
    return root


def _error_line(capsys):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, captured
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["extract", "--trait", "pirate", "--positions", "middle"], "--positions 'middle' is not one of: response_avg"),
        (["extract", "--trait", "pirate", "--method", "median"], "--method 'median' is not one of: mean_diff"),
        (["monitor", "--vector", "{vector}", "--prompt", "hi", "--positions", "middle"], "unknown positions 'middle'"),
        (["monitor", "--vector", "{vector}", "--prompt", "hi", "-r", ""], "response 1 is empty"),
        (["monitor", "--vector", "{vector}", "--prompt", "hi", "--prompt", "yo", "-r", "arr"], "1 responses for 2 prompts"),
        (["monitor", "--vector", "{vector}", "--prompt", "hi", "--format", "gguf"], "--format 'gguf' is not one of: safetensors, pt, npy"),
        (["generate", "--vector", "{vector}", "--prompt", "hi", "-l", "1", "--format", "gguf"], "--format 'gguf' is not one of: safetensors"),
        (["finetune", "--data", "{tmp}/d.jsonl", "--out", "{tmp}/ft", "--max-steps", "0"], "max_steps must be at least 1, got 0"),
        (["finetune", "--data", "{tmp}/d.jsonl", "--out", "{tmp}/ft", "--max-steps=-3"], "max_steps must be at least 1, got -3"),
        (["finetune", "--data", "{tmp}/d.jsonl", "--out", "{tmp}/theirs"], "not a folder personactl wrote"),
        (["finetune", "--data", "{tmp}/d.jsonl", "--out", "{tmp}/ft", "--steer-op", "flip"], "--steer-op 'flip' is not one of: add, ablate"),
        (["lora", "extract", "--trait", "pirate", "--out", "{tmp}/l", "--max-steps", "0"], "max_steps must be at least 1"),
        (["adapter", "train", "--data", "{tmp}/d.jsonl", "--name", "x", "--max-steps", "0"], "max_steps must be at least 1"),
        (["sweep", "--config", "{tmp}/list.json"], "holds a JSON list, not an object of settings"),
        (["sweep", "--config", "{tmp}/missing.json"], "cannot read --config"),
        (["adapter", "train", "--data", "{tmp}/d.jsonl", "--name", "x", "--out", "."], "it holds the current folder"),
        (["adapter", "train", "--data", "{tmp}/d.jsonl", "--name", "x", "--out", "{tmp}/theirs"], "not a folder personactl wrote"),
        (["adapter", "train", "--data", "{tmp}/d.jsonl", "--name", "../x"], "adapter name '../x' is not allowed"),
        (["adapter", "train", "--data", "{tmp}/d.jsonl", "--name", ".."], "adapter name '..' is not allowed"),
    ],
)
def test_option_mistakes_are_one_line_before_any_model_loads(argv, message, vector_file, tmp_path, capsys, monkeypatch, no_model_load):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    (tmp_path / "list.json").write_text('[{"trait": "pirate"}]')
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "results.jsonl").write_text("precious\n")
    assert run([a.format(vector=vector_file, tmp=tmp_path) for a in argv]) == 2
    assert message in _error_line(capsys)
    assert (tmp_path / "theirs" / "results.jsonl").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "list.json", "theirs", "v.safetensors"]


def test_transfer_evaluate_checks_the_layer_before_generating_pairs(model_dir, vector_file, capsys, monkeypatch):
    def no_pairs(*args, **kwargs):
        raise AssertionError("pairs were generated before the layer was checked")

    monkeypatch.setattr("personactl.extraction.generate_pairs", no_pairs)
    assert run(["transfer", "evaluate", "--vector", str(vector_file), "--trait", "pirate", "--target", str(model_dir), "--layer", "99"]) == 2
    assert "layer 99 is out of range" in _error_line(capsys)


def test_adapter_show_without_a_card_and_list_with_a_corrupt_card(registry, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert run(["adapter", "show", str(tmp_path / "plain")]) == 2
    assert "has no persona card (persona.json)" in _error_line(capsys)
    assert run(["adapter", "show", "arr"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "arr"
    (registry / "broken").mkdir()
    (registry / "broken" / "persona.json").write_text('{"name": "bro')
    assert run(["adapter", "list"]) == 2
    assert f"{registry / 'broken' / 'persona.json'} is corrupt" in _error_line(capsys)
    (registry / "broken" / "persona.json").write_text("[1, 2]")
    assert run(["adapter", "list"]) == 2
    assert "expected a JSON object" in _error_line(capsys)


def test_adapter_blend_names_stay_inside_the_registry(registry, tmp_path, capsys):
    assert run(["adapter", "blend", "arr=0.5", "--name", "../x"]) == 2
    assert "adapter name '../x' is not allowed" in _error_line(capsys)
    assert not (tmp_path / "x").exists()
    assert run(["adapter", "blend", "arr=0.5", "--name", "half"]) == 0
    assert (registry / "half" / "persona.json").is_file()
    (registry / "foreign").mkdir()
    (registry / "foreign" / "notes.txt").write_text("mine")
    assert run(["adapter", "blend", "arr=0.5", "--name", "foreign"]) == 2
    assert "not a folder personactl wrote" in _error_line(capsys)
    assert (registry / "foreign" / "notes.txt").read_text() == "mine"


def test_a_write_error_is_one_line_with_the_reason_and_the_file(registry, capsys, monkeypatch):
    def disk_full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr("personactl.lora.direction.save_file", disk_full)
    assert run(["adapter", "blend", "arr=0.5", "--name", "half"]) == 2
    err = _error_line(capsys)
    assert err.startswith(f"error: {os.strerror(errno.ENOSPC)}: ") and "adapter_model.safetensors" in err
    assert sorted(p.name for p in registry.iterdir()) == ["arr"]  # no half-written adapter, no temp folder left


def test_an_os_error_from_the_file_system_is_one_line(registry, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert run(["lora", "svd", str(registry / "arr"), "--plot", str(tmp_path / "a-file" / "svd.png")]) == 2
    assert str(tmp_path / "a-file") in _error_line(capsys)


def test_real_bugs_keep_their_traceback(registry, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("personactl.lora.adapters.combine", bug)
    with pytest.raises(KeyError, match="a bug"):
        run(["adapter", "blend", "arr=0.5", "--name", "half"])


def test_chat_survives_a_bad_vector_command_and_an_error_in_a_reply(model_dir, vector_file, capsys, monkeypatch):
    from personactl.errors import SteeringError
    from personactl.lora import chat

    real, calls = chat.generate, []

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise SteeringError("the steering could not be applied: try another layer")
        return real(*args, **kwargs)

    monkeypatch.setattr(chat, "generate", flaky)
    script = (
        "\n".join(
            [
                "hello",
                f"/vector {vector_file} abc",
                f"/vector {vector_file} 1 1.5",
                f"/vector {vector_file} 1 99",
                f"/vector {vector_file} 2 1",
                "again",
                "/reset",
            ]
        )
        + "\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert run(["chat", "--model", str(model_dir), "--max-new-tokens", "2"]) == 0
    printed = capsys.readouterr().out
    for expected in (
        "error: the steering could not be applied",
        "error: 'abc' is not COEF [LAYER]",
        "error: '1 1.5' is not COEF [LAYER]",
        "error: layer 99 is out of range",
        "at layer 1, coef 2",
        "conversation cleared",
    ):
        assert expected in printed, expected
    assert len(calls) == 2 and calls[1][0] == [{"role": "user", "content": "again"}]  # the failed turn left no trace
