import copy
import json

import pytest
import torch
from conftest import tiny_backbone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import AdapterError, LoRADirection, difference, merged, merged_delta, singular_values
from personactl.lora.train import train_lora

TINY = LoRATrainConfig(rank=2, alpha=4.0, max_steps=2, batch_size=2, learning_rate=1e-2)


def _adapter(backbone, folder, answer, seed):
    """A real (tiny) PEFT LoRA trained for two steps; B is non-zero after training."""
    model, losses = train_lora(
        backbone,
        ["<user>hi</s><assistant>"] * 4,
        [answer] * 4,
        LoRATrainConfig(**{**vars(TINY), "seed": seed}),
        out_dir=folder,
        metadata={"trait": "t"},
    )
    model.unload()
    return LoRADirection.load(folder)


@pytest.fixture(params=["llama", "gpt2"])
def adapters(request, tmp_path):
    backbone = tiny_backbone(request.param)
    pos = _adapter(backbone, tmp_path / "pos", "arr matey", 0)
    neg = _adapter(backbone, tmp_path / "neg", "good day", 1)
    return backbone, pos, neg, tmp_path


def _logits(backbone, ids):
    with torch.no_grad():
        return backbone.model(input_ids=ids).logits


def test_training_touches_only_lora_and_restores_the_base(adapters):
    backbone, pos, _, _ = adapters
    assert all(f.B.abs().sum() > 0 for f in pos.modules.values())
    assert "lora" not in " ".join(n for n, _ in backbone.model.named_modules())


def test_diff_adapter_is_a_peft_folder_equal_to_pos_minus_neg(adapters):
    from peft import PeftModel

    backbone, pos, neg, tmp = adapters
    diff = difference(pos, neg, {"trait": "t"})
    diff.save(tmp / "diff")
    assert json.loads((tmp / "diff" / "adapter_config.json").read_text())["r"] == 2 * pos.rank
    ids = torch.tensor([[5, 9, 20, 33, 41]])
    with merged(backbone, (pos, 1.0), (neg, -1.0)):
        expected = _logits(backbone, ids)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(backbone.model), str(tmp / "diff"))
    with torch.no_grad():
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for name in pos.modules:
        torch.testing.assert_close(diff.modules[name].delta(), pos.modules[name].delta() - neg.modules[name].delta(), rtol=1e-5, atol=1e-6)


def test_merge_restores_every_weight_bit_exactly_even_on_exception(adapters):
    backbone, pos, neg, _ = adapters
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with merged(backbone, (difference(pos, neg), 2.5)):
            changed = [n for n, p in backbone.model.named_parameters() if not torch.equal(p, before[n])]
            assert changed
            raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())


def test_composition_is_the_weighted_sum(adapters):
    backbone, pos, neg, _ = adapters
    name = next(iter(pos.modules))
    together = merged_delta(backbone, [(pos, 1.5), (neg, -1.0)], name)
    a = merged_delta(backbone, [(pos, 1.0)], name)
    b = merged_delta(backbone, [(neg, 1.0)], name)
    torch.testing.assert_close(together, 1.5 * a - b, rtol=1e-4, atol=1e-6)


def test_singular_values_match_a_dense_svd(adapters):
    _, pos, neg, _ = adapters
    diff = difference(pos, neg)
    for name, values in singular_values(diff).items():
        dense = torch.linalg.svdvals(diff.modules[name].delta().double()).float()[: values.numel()]
        torch.testing.assert_close(values, dense, rtol=1e-4, atol=1e-6)
        assert values.numel() <= 2 * pos.rank


@pytest.mark.parametrize("other", ["gemma3", "gpt2"])
def test_adapter_for_another_model_is_refused(adapters, other):
    backbone, pos, _, _ = adapters
    if backbone.model_type == other:
        other = "qwen2"
    before = {n: p.detach().clone() for n, p in tiny_backbone(other).model.named_parameters()}
    target = tiny_backbone(other)
    with pytest.raises(AdapterError, match="made for"):
        with merged(target, (pos, 1.0)):
            pass
    assert all(torch.equal(p, before[n]) for n, p in target.model.named_parameters())


def test_mismatched_adapters_are_refused(adapters, tmp_path):
    backbone, pos, _, _ = adapters
    model, _ = train_lora(backbone, ["a"] * 2, ["b"] * 2, LoRATrainConfig(**{**vars(TINY), "rank": 4}), out_dir=tmp_path / "r4")
    model.unload()
    with pytest.raises(AdapterError, match="ranks"):
        difference(pos, LoRADirection.load(tmp_path / "r4"))
    with pytest.raises(AdapterError, match="not a PEFT adapter"):
        LoRADirection.load(tmp_path)


def test_lora_method_groups_rows_by_coefficient_and_matches_plain_merges(adapters):
    from personactl.generation import chat_prompt, generate
    from personactl.methods import GenerationSettings, MethodContext, make_method
    from personactl.traits import load_trait

    backbone, pos, neg, tmp = adapters
    difference(pos, neg).save(tmp / "diff")
    settings = GenerationSettings(max_new_tokens=4)
    method = make_method("lora", MethodContext(backbone, load_trait("pirate"), None, settings, options={"lora": str(tmp / "diff")}))
    coefs = [0.0, 3.0, 0.0, -3.0]
    answers = method.generate(["hi", "hi", "yo", "yo"], coefs, layer=0, seeds=[0, 1, 2, 3])
    diff = LoRADirection.load(tmp / "diff")
    for question, coef, answer in zip(["hi", "hi", "yo", "yo"], coefs, answers):
        with merged(backbone, (diff, coef)):
            assert generate(backbone, [chat_prompt(question)], max_new_tokens=4) == [answer]


def test_lora_method_without_a_direction_is_a_clear_error():
    from personactl.methods import GenerationSettings, MethodContext, MethodError, make_method
    from personactl.traits import load_trait

    with pytest.raises(MethodError, match="--lora"):
        make_method("lora", MethodContext(tiny_backbone("llama"), load_trait("pirate"), None, GenerationSettings()))


def test_runtime_mode_equals_merged_mode_and_unloads(adapters):
    from personactl.lora.runtime import runtime

    backbone, pos, neg, tmp = adapters
    diff = difference(pos, neg)
    diff.save(tmp / "diff")
    ids = torch.tensor([[3, 8, 13, 21]])
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    with runtime(backbone, tmp / "diff", coef=2.0) as handle:
        at_two = _logits(backbone, ids)
        handle.set_coef(-1.0)
        at_minus_one = _logits(backbone, ids)
    for coef, got in ((2.0, at_two), (-1.0, at_minus_one)):
        with merged(backbone, (diff, coef)):
            torch.testing.assert_close(got, _logits(backbone, ids), rtol=1e-4, atol=1e-5)
    assert {n for n, _ in backbone.model.named_parameters()} == set(before)
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())


def test_geometry_and_latency_cover_every_layer_and_mode(adapters):
    from personactl import PersonaVector
    from personactl.lora.compare import latencies, residual_shift

    backbone, pos, neg, tmp = adapters
    difference(pos, neg).save(tmp / "diff")
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size))
    shifts = residual_shift(backbone, ["hello", "arr"], vector, tmp / "diff", coef=3.0)
    assert [s.layer for s in shifts] == [1, 2, 3]
    assert all(s.shift_norm > 0 and -1 <= s.cosine_with_vector <= 1 for s in shifts)
    rows = latencies(backbone, ["hi"], vector, 1, tmp / "diff", new_tokens=3, repeats=1)
    assert [r.mode for r in rows] == ["unsteered", "activation hook", "LoRA merged", "LoRA unmerged"]
    assert rows[0].ratio_to_unsteered == 1.0 and all(r.tokens_per_second > 0 for r in rows)


def test_compare_refuses_a_layer_blend_or_no_lora_before_the_sweep(tmp_path):
    from personactl.errors import OptionError
    from personactl.evaluate import SweepConfig
    from personactl.lora.compare import compare

    for config, message in ((SweepConfig(lora=str(tmp_path / "lora"), layers=["auto:2"]), "one layer"), (SweepConfig(), "needs a persona direction")):
        with pytest.raises(OptionError, match=message):
            compare(config, tmp_path, backbone=None)  # no model needed: refused first
    assert not any(tmp_path.iterdir())


def test_preventative_steering_trains_and_leaves_the_base_untouched(adapters):
    from personactl import PersonaVector, SteeringTerm
    from personactl.lora.finetune import finetune

    backbone, pos, neg, tmp = adapters
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    hooks = [dict(b._forward_hooks) for b in backbone.layers]
    vector = PersonaVector(torch.ones(backbone.n_layers + 1, backbone.hidden_size))
    losses = finetune(
        backbone,
        ["<user>hi</s><assistant>"] * 4,
        ["arr"] * 4,
        tmp / "ft",
        TINY,
        steering=[SteeringTerm(vector, 1, 2.0)],
        premerge=[(difference(pos, neg), -5.0)],
    )
    assert len(losses) == 2 and LoRADirection.load(tmp / "ft").metadata["preventative"]["premerge"][0]["coef"] == -5.0
    assert [dict(b._forward_hooks) for b in backbone.layers] == hooks
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())


def test_finetune_data_accepts_prompt_response_aliases(tmp_path):
    from personactl.lora.adapters import PersonaDataError, read_persona_data

    good = tmp_path / "d.jsonl"
    good.write_text('{"instruction": "Hi", "input": "there", "output": "Arr"}\n\n{"prompt": "Yo", "response": "Aye"}\n')
    data = read_persona_data(good)
    assert (data.questions, data.answers) == (["Hi\n\nthere", "Yo"], ["Arr", "Aye"])
    good.write_text('{"instruction": "Hi", "output": "Arr"}\nnot json\n')
    with pytest.raises(PersonaDataError, match="line 2: not valid JSON"):
        read_persona_data(good)


def test_training_on_nothing_is_a_clear_error():
    with pytest.raises(AdapterError, match="nothing to train on"):
        train_lora(tiny_backbone("llama"), [], [], TINY)


def test_full_finetune_saves_a_model_folder_that_projects_and_restores_the_base(adapters):
    from personactl import PersonaVector, SteeringTerm
    from personactl.lora.finetune import finetune
    from personactl.lora.projection import project_checkpoint

    backbone, pos, neg, tmp = adapters
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in backbone.model.named_parameters()}
    vector = PersonaVector(torch.ones(backbone.n_layers + 1, backbone.hidden_size))
    losses = finetune(backbone, ["<user>hi</s><assistant>"] * 4, ["arr"] * 4, tmp / "full", TINY, steering=[SteeringTerm(vector, 1, 1.0)], full=True)
    assert len(losses) == 2 and (tmp / "full" / "config.json").is_file()
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())
    assert {n: p.requires_grad for n, p in backbone.model.named_parameters()} == flags
    drift = project_checkpoint(backbone, difference(pos, neg), tmp / "full")
    assert drift.kind == "full" and drift.total != 0.0


def test_blend_of_adapters_with_different_ranks_equals_the_weighted_sum(adapters, tmp_path):
    from personactl.lora.direction import combine

    backbone, pos, _, _ = adapters
    model, _ = train_lora(
        backbone, ["<user>yo</s><assistant>"] * 4, ["ahoy"] * 4, LoRATrainConfig(**{**vars(TINY), "rank": 4, "alpha": 3.0}), out_dir=tmp_path / "r4"
    )
    model.unload()
    other = LoRADirection.load(tmp_path / "r4")
    blend = combine([(pos, 0.7), (other, -1.3)])
    assert blend.rank == pos.rank + other.rank
    blend.save(tmp_path / "blend")
    reloaded = LoRADirection.load(tmp_path / "blend")  # the saved config must reproduce the scaling
    for name in pos.modules:
        expected = 0.7 * pos.modules[name].delta() - 1.3 * other.modules[name].delta()
        torch.testing.assert_close(reloaded.modules[name].delta(), expected, rtol=1e-4, atol=1e-6)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coef_pos=st.floats(-8, 8), coef_neg=st.floats(-8, 8))
def test_merge_then_restore_is_bit_exact_for_any_coefficients(adapters, coef_pos, coef_neg):
    backbone, pos, neg, _ = adapters
    before = copy.deepcopy(backbone.model.state_dict())
    with merged(backbone, (pos, coef_pos), (neg, coef_neg)):
        pass
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
