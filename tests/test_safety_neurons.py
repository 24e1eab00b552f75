"""Wanda scores, set-difference masks, mask files and frozen fine-tuning on tiny random models."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import tiny_backbone

from personactl.lora.config import LoRATrainConfig
from personactl.safety import (
    FrozenWeightsChanged,
    SafetyError,
    frozen,
    input_norms,
    linear_layers,
    load_tensors,
    match_to_model,
    random_like,
    save_tensors,
    set_difference,
    top_fraction,
    wanda_scores,
    zeroed,
)

PROMPTS = ["<user>hi there</s><assistant>", "<user>tell me a story</s><assistant>", "<user>no</s><assistant>"]
ANSWERS = ["hello, friend", "once upon a time", "fine"]


@pytest.fixture
def llama():
    return tiny_backbone("llama")


def test_wanda_equals_the_formula_computed_by_hand(llama):
    """S_ij = |W_ij| * ||X_j||_2 with X = the inputs of that layer at the answer tokens only."""
    name = "model.layers.1.mlp.down_proj"
    layer = linear_layers(llama)[name]
    seen = []
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        from personactl.activations import make_batch

        batch = make_batch(llama, PROMPTS, ANSWERS)
        with torch.no_grad():
            llama.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    finally:
        handle.remove()
    x = seen[0][batch.response_mask]  # [answer tokens, in]
    expected = layer.weight.detach().abs() * x.norm(dim=0)[None, :]
    scores = wanda_scores(llama, PROMPTS, ANSWERS, batch_size=2)  # two batches: sums must add up across them
    assert torch.allclose(scores[name], expected, rtol=1e-4, atol=1e-6)
    assert set(scores) == set(linear_layers(llama)) and len(scores) == 3 * 7
    _, tokens = input_norms(llama, PROMPTS, ANSWERS)
    assert tokens == int(batch.response_mask.sum())


def test_hooks_are_removed_even_when_the_forward_fails(llama):
    with pytest.raises(SafetyError):
        input_norms(llama, PROMPTS, ["", "", ""])
    assert all(not m._forward_pre_hooks for m in linear_layers(llama).values())


def test_set_difference_is_exactly_top_safety_minus_top_utility():
    torch.manual_seed(0)
    safety = {"a": torch.rand(20, 10), "b": torch.rand(5, 8)}
    utility = {"a": torch.rand(20, 10), "b": torch.rand(5, 8)}
    masks = set_difference(safety, utility, 0.1, 0.2)
    for name in safety:
        k_s, k_u = int(safety[name].numel() * 0.1), int(safety[name].numel() * 0.2)
        top_s = set(torch.topk(safety[name].flatten(), k_s).indices.tolist())
        top_u = set(torch.topk(utility[name].flatten(), k_u).indices.tolist())
        assert set(masks[name].flatten().nonzero()[:, 0].tolist()) == top_s - top_u
    assert int(top_fraction(safety, 0.1)["a"].sum()) == 20
    control = random_like(masks, seed=1)
    assert all(int(control[n].sum()) == int(masks[n].sum()) for n in masks)
    assert any(not torch.equal(control[n], masks[n]) for n in masks)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_zero_one_is_refused(bad):
    with pytest.raises(SafetyError, match="between 0 and 1"):
        top_fraction({"a": torch.rand(4, 4)}, bad)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_masks_round_trip(llama, tmp_path, suffix):
    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.05)
    path = save_tensors(masks, tmp_path / f"masks{suffix}", {"model": llama.name, "sparsity": 0.05})
    loaded, meta = load_tensors(path)
    assert set(loaded) == set(masks) and all(torch.equal(loaded[n], masks[n]) for n in masks)
    assert meta == ({"model": llama.name, "sparsity": 0.05} if suffix == ".safetensors" else {})


def test_reference_names_without_the_model_prefix_are_matched(llama):
    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.05)
    short = {name.removeprefix("model."): m for name, m in masks.items()}
    assert set(match_to_model(llama, short)) == set(masks)


def test_a_mask_file_for_another_model_is_refused(llama, tmp_path):
    other = {"model.layers.0.self_attn.q_proj": torch.zeros(7, 7, dtype=torch.bool)}
    with pytest.raises(SafetyError, match="another model"):
        match_to_model(llama, load_tensors(save_tensors(other, tmp_path / "m.safetensors"))[0])
    with pytest.raises(SafetyError, match="does not have"):
        match_to_model(llama, {"encoder.block.0.dense": torch.zeros(2, 2)})


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_pt_file_holding_code_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "original_safety_masks.pt"
    path.write_bytes(pickle.dumps({"model.layers.0.mlp.up_proj": _Boom()}, protocol=2))
    with pytest.raises(SafetyError, match="refused"):
        load_tensors(path)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_zeroed_restores_bit_exactly(llama):
    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.1)
    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    with zeroed(llama, masks) as count:
        weight = linear_layers(llama)["model.layers.0.mlp.up_proj"].weight
        assert count == sum(int(m.sum()) for m in masks.values())
        assert bool((weight[masks["model.layers.0.mlp.up_proj"]] == 0).all())
    assert all(torch.equal(before[k], v) for k, v in llama.model.state_dict().items())


def _config(**changes):
    return LoRATrainConfig(**{"rank": 2, "alpha": 4.0, "batch_size": 3, "learning_rate": 1e-2, "epochs": 3, **changes})


def test_full_fine_tune_keeps_frozen_weights_bit_identical_while_others_move(llama):
    from personactl.lora.train import all_weights_trainable, optimise

    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.2)
    layers = linear_layers(llama)
    with all_weights_trainable(llama):
        before = {n: layers[n].weight.detach().clone() for n in masks}
        with frozen(llama, masks) as state:
            optimise(llama.model, llama, PROMPTS, ANSWERS, _config(), "test")
            state.verify()
        for n, m in masks.items():
            after = layers[n].weight.detach()
            assert torch.equal(after[m], before[n][m])
            assert not torch.equal(after[~m], before[n][~m])


def test_peft_fine_tune_keeps_frozen_base_weights_while_lora_learns(llama):
    from personactl.lora.train import train_lora

    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.2)
    layers = linear_layers(llama)
    before = {n: layers[n].weight.detach().clone() for n in masks}
    with frozen(llama, masks) as state:
        model, losses = train_lora(llama, PROMPTS, ANSWERS, _config(target_modules=("q_proj", "v_proj")))
        state.verify()
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and any(float(p.detach().abs().sum()) > 0 for p in lora_b)
        model.unload()
    assert all(torch.equal(layers[n].weight, before[n]) for n in masks)


def test_changed_frozen_weights_are_an_error(llama):
    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.2)
    with frozen(llama, masks) as state:
        with torch.no_grad():
            linear_layers(llama)["model.layers.0.mlp.up_proj"].weight.add_(1.0)
        with pytest.raises(FrozenWeightsChanged, match="frozen weights changed"):
            state.verify()


def test_freezing_hooks_are_removed_on_error(llama):
    from torch.optim.optimizer import _global_optimizer_post_hooks

    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.2)
    weight = linear_layers(llama)["model.layers.0.mlp.up_proj"].weight
    hooks_before = len(_global_optimizer_post_hooks)
    with pytest.raises(RuntimeError), frozen(llama, masks):
        raise RuntimeError("training crashed")
    assert len(_global_optimizer_post_hooks) == hooks_before
    assert not weight._backward_hooks and not getattr(weight, "_post_accumulate_grad_hooks", None)


def test_the_gradient_hooks_zero_exactly_the_masked_gradients(llama):
    from personactl.activations import make_batch
    from personactl.lora.train import all_weights_trainable, answer_labels

    masks = top_fraction(wanda_scores(llama, PROMPTS, ANSWERS), 0.2)
    batch = make_batch(llama, PROMPTS, ANSWERS)
    with all_weights_trainable(llama), frozen(llama, masks):
        llama.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            labels=answer_labels(batch.input_ids, batch.response_mask),
        ).loss.backward()
        for name, weight in ((n, linear_layers(llama)[n].weight) for n in masks):
            assert bool((weight.grad[masks[name]] == 0).all()) and bool((weight.grad[~masks[name]] != 0).any())
