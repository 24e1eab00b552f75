"""Training mechanics: gradient accumulation, gradient checkpointing, resuming, quantized-load fallback."""

import json

import pytest
import torch
from conftest import tiny_backbone

import personactl.lora.train as train_module
from personactl.errors import ModelLoadError, PersonactlError
from personactl.lora.adapters import adapter_defaults, train_adapter
from personactl.lora.checkpoint import CheckpointMismatch
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import LoRADirection
from personactl.lora.train import batch_schedule, train_lora
from personactl.models import quantization_config

PROMPTS = [f"q{i} " * (1 + i % 3) for i in range(8)]
ANSWERS = [f"answer {i} " * (1 + i % 2) for i in range(8)]


def _lora(backbone, **changes):
    config = LoRATrainConfig(**{"rank": 2, "alpha": 4.0, "batch_size": 4, "learning_rate": 1e-2, "epochs": 2, **changes})
    model, losses = train_lora(backbone, PROMPTS, ANSWERS, config)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    model.unload()
    return losses, weights


def _close(a, b, tol):
    return all(torch.allclose(a[k], b[k], atol=tol, rtol=tol) for k in a)


def test_accumulated_micro_batches_take_the_same_step_as_one_batch():
    backbone = tiny_backbone("llama")
    whole_losses, whole = _lora(backbone)
    split_losses, split = _lora(backbone, batch_size=2, grad_accum=2)
    assert len(whole_losses) == len(split_losses) == 4
    assert whole_losses == pytest.approx(split_losses, rel=1e-4) and _close(whole, split, 1e-4)
    _, other = _lora(backbone, batch_size=2)  # without accumulation the steps differ: the test can fail
    assert not _close(whole, other, 1e-4)


def _counting_block_calls(backbone, **changes):
    calls = []
    handle = backbone.layers[0].self_attn.register_forward_hook(lambda *args: calls.append(1))
    try:
        return _lora(backbone, **changes), len(calls)
    finally:
        handle.remove()


def test_gradient_checkpointing_recomputes_in_backward_and_trains_the_same():
    backbone = tiny_backbone("llama")
    (plain_losses, plain), plain_calls = _counting_block_calls(backbone)
    (ckpt_losses, ckpt), ckpt_calls = _counting_block_calls(backbone, gradient_checkpointing=True)
    assert ckpt_calls == 2 * plain_calls  # the block ran again in the backward pass
    assert plain_losses == pytest.approx(ckpt_losses, rel=1e-5) and _close(plain, ckpt, 1e-5)
    assert _counting_block_calls(backbone)[1] == plain_calls  # switched off again afterwards


def test_schedule_is_fixed_by_the_seed_and_honours_max_steps():
    config = LoRATrainConfig(batch_size=3, epochs=2, seed=1)
    steps = batch_schedule(7, config)
    assert [e for e, _ in steps] == [0, 0, 0, 1, 1, 1] and sorted(sum((r for e, r in steps if e == 0), [])) == list(range(7))
    assert steps == batch_schedule(7, config) and len(batch_schedule(7, LoRATrainConfig(batch_size=3, epochs=2, max_steps=4))) == 4


def _records(tmp_path, n=20):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"say {i}", "output": f"arr {i} matey"}) + "\n" for i in range(n)))
    return path


def test_an_interrupted_run_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    backbone = tiny_backbone("llama")
    config = LoRATrainConfig(
        **{**vars(adapter_defaults(backbone)), "rank": 2, "alpha": 4.0, "batch_size": 4, "epochs": 2, "learning_rate": 1e-2, "checkpoint_every": 1}
    )  # dropout 0.05: the RNG state must resume too
    data = _records(tmp_path)
    straight = train_adapter(backbone, data, "a", tmp_path / "straight", config)

    real, calls = train_module._accumulate, []

    def crash_on_sixth(*args):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_module, "_accumulate", crash_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(backbone, data, "a", tmp_path / "resumed", config)
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.checkpoint" / "state.json").is_file()
    assert json.loads((tmp_path / ".resumed.checkpoint" / "state.json").read_text())["step"] == 5
    with pytest.raises(CheckpointMismatch, match="--restart"):
        train_adapter(backbone, data, "a", tmp_path / "resumed", LoRATrainConfig(**{**vars(config), "learning_rate": 2e-2}))
    monkeypatch.setattr(train_module, "_accumulate", real)
    resumed = train_adapter(backbone, data, "a", tmp_path / "resumed", config)
    assert not (tmp_path / ".resumed.checkpoint").exists()
    assert [m["val_loss"] for m in resumed["metrics"]] == pytest.approx([m["val_loss"] for m in straight["metrics"]], rel=1e-6)
    a, b = LoRADirection.load(tmp_path / "straight"), LoRADirection.load(tmp_path / "resumed")
    assert all(torch.allclose(a.modules[k].delta(), b.modules[k].delta(), atol=1e-6) for k in a.modules)


def test_bad_training_settings_and_quantization_on_cpu():
    with pytest.raises(PersonactlError, match="grad_accum must be at least 1"):
        LoRATrainConfig(grad_accum=0)
    with pytest.raises(ModelLoadError, match="use 4bit or 8bit"):
        quantization_config("3bit")
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="loading unquantised"):
            assert quantization_config("4bit") is None


def test_preventative_steering_acts_in_the_training_steps(tmp_path):
    """finetune's steering term is on while it trains: at the first step (before any update) the states leaving the
    steered layer are moved by coef * v, the first loss differs from training without it, and so does the adapter."""
    from personactl import PersonaVector, SteeringTerm
    from personactl.lora.finetune import finetune

    backbone = tiny_backbone("llama")
    torch.manual_seed(0)
    vector, layer, coef = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size)), 1, 4.0
    config = LoRATrainConfig(rank=2, alpha=4.0, batch_size=4, learning_rate=1e-2, max_steps=2)

    def train(name, steering):
        seen = []
        grab = lambda module, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())  # noqa: E731
        handle = backbone.block(layer + 1).register_forward_pre_hook(grab, with_kwargs=True)
        try:
            losses = finetune(backbone, PROMPTS, ANSWERS, tmp_path / name, config, steering=steering)
        finally:
            handle.remove()
        return seen[0], losses, LoRADirection.load(tmp_path / name)

    plain_states, plain_losses, plain = train("plain", ())
    steered_states, steered_losses, steered = train("steered", [SteeringTerm(vector, layer, coef)])
    shift = steered_states - plain_states
    torch.testing.assert_close(shift, (coef * vector[layer]).expand_as(shift), rtol=1e-4, atol=1e-4)
    assert steered_losses[0] != pytest.approx(plain_losses[0], rel=1e-3)
    assert any(not torch.allclose(plain.modules[k].delta(), steered.modules[k].delta(), atol=1e-6) for k in plain.modules)
