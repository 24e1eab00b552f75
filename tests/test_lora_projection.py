import copy
import itertools
import math
import re

import numpy as np
import pytest
import torch
from conftest import tiny_backbone

from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import AdapterError, LoRADirection, LoRAFactors, _is_conv1d, _weight_shape
from personactl.lora.projection import (
    DriftError,
    DriftProjection,
    correlate,
    dense_inner,
    drift_report,
    factor_inner,
    fisher_ci,
    layer_of,
    match_scores,
    permutation_p,
    project_checkpoint,
    project_checkpoints,
    read_scores,
)
from personactl.lora.train import train_lora


def _targets(backbone):
    return [n for n, m in backbone.model.named_modules() if (isinstance(m, torch.nn.Linear) or _is_conv1d(m)) and layer_of(n) is not None]


def _save(backbone, modules, folder, rank, alpha):
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "task_type": "CAUSAL_LM",
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n in modules}),
        "base_model_name_or_path": backbone.name,
    }
    LoRADirection(modules, config, {"base_model": backbone.name, "base_model_type": backbone.model_type}).save(folder)
    return LoRADirection.load(folder)


def _random_direction(backbone, folder, seed, rank=2, alpha=4.0):
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for name in _targets(backbone):
        out, inp = _weight_shape(backbone.model.get_submodule(name))
        modules[name] = LoRAFactors(0.1 * torch.randn(rank, inp, generator=g), 0.1 * torch.randn(out, rank, generator=g), alpha / rank)
    return _save(backbone, modules, folder, rank, alpha)


def _scaled(backbone, direction, folder, c):
    """The same factors with B scaled by c: exactly c * dW."""
    modules = {n: LoRAFactors(f.A, c * f.B, f.scaling) for n, f in direction.modules.items()}
    return _save(backbone, modules, folder, direction.rank, float(direction.config["lora_alpha"]))


def _full_model(backbone, direction, folder, c, **save_kwargs):
    """A copy of the base with c * dW added into its weights, saved with save_pretrained (safetensors)."""
    model = copy.deepcopy(backbone.model)
    with torch.no_grad():
        for name, f in direction.modules.items():
            module = model.get_submodule(name)
            delta = c * f.delta()
            module.weight.add_(delta.T if _is_conv1d(module) else delta)
    model.save_pretrained(folder, **save_kwargs)
    return folder


def _norms(direction):
    total = math.sqrt(sum(factor_inner(f, f) for f in direction.modules.values()))
    per_layer = {}
    for name, f in direction.modules.items():
        per_layer[layer_of(name)] = per_layer.get(layer_of(name), 0.0) + factor_inner(f, f)
    return total, {l: math.sqrt(v) for l, v in per_layer.items()}


@pytest.fixture(params=["llama", "gpt2"])
def setup(request, tmp_path):
    backbone = tiny_backbone(request.param)
    return backbone, _random_direction(backbone, tmp_path / "direction", seed=0), tmp_path


def test_factor_formula_equals_the_dense_frobenius_inner_product():
    g = torch.Generator().manual_seed(1)
    x = LoRAFactors(torch.randn(3, 20, generator=g), torch.randn(30, 3, generator=g), 0.7)
    y = LoRAFactors(torch.randn(5, 20, generator=g), torch.randn(30, 5, generator=g), 2.0)
    dense = float((x.delta().double() * y.delta().double()).sum())
    assert factor_inner(x, y) == pytest.approx(dense, rel=1e-6)
    assert dense_inner(x.delta().double(), y) == pytest.approx(dense, rel=1e-6)
    assert factor_inner(x, x) == pytest.approx(float(x.delta().double().norm() ** 2), rel=1e-6)


def test_layers_follow_the_package_convention():
    assert layer_of("model.layers.12.self_attn.q_proj") == 13  # block 12 writes hidden_states[13]
    assert layer_of("transformer.h.0.attn.c_attn") == 1
    assert layer_of("lm_head") is None


@pytest.mark.parametrize("c", [2.5, -0.5])
def test_adapter_equal_to_c_times_dw_projects_to_c_times_its_norm(setup, c):
    backbone, direction, tmp = setup
    _scaled(backbone, direction, tmp / "ck", c)
    p = project_checkpoint(backbone, direction, tmp / "ck")
    norm, per_layer = _norms(direction)
    assert p.kind == "adapter"
    assert p.total == pytest.approx(c * norm, rel=1e-6)
    assert p.cosine == pytest.approx(math.copysign(1.0, c), abs=1e-9)
    assert set(p.per_layer) == {1, 2, 3}
    for layer, value in p.per_layer.items():
        assert value == pytest.approx(c * per_layer[layer], rel=1e-6)
        assert p.per_layer_cosine[layer] == pytest.approx(math.copysign(1.0, c), abs=1e-9)


@pytest.mark.parametrize("shards", [None, "100KB"])
def test_full_model_checkpoint_gives_the_adapter_numbers(setup, shards):
    backbone, direction, tmp = setup
    _scaled(backbone, direction, tmp / "adapter", 1.5)
    kwargs = {"max_shard_size": shards} if shards else {}
    _full_model(backbone, direction, tmp / "full", 1.5, **kwargs)
    assert (tmp / "full" / "model.safetensors.index.json").exists() == bool(shards)
    a = project_checkpoint(backbone, direction, tmp / "adapter")
    f = project_checkpoint(backbone, direction, tmp / "full")
    assert f.kind == "full"
    assert f.total == pytest.approx(a.total, rel=1e-4)
    assert f.cosine == pytest.approx(a.cosine, abs=1e-5)
    for layer in a.per_layer:
        assert f.per_layer[layer] == pytest.approx(a.per_layer[layer], rel=1e-4)
        assert f.per_layer_cosine[layer] == pytest.approx(a.per_layer_cosine[layer], abs=1e-5)


def test_peft_trained_adapter_and_its_merged_model_agree(setup):
    from peft import PeftModel

    backbone, _, tmp = setup
    config = LoRATrainConfig(rank=2, alpha=4.0, max_steps=2, batch_size=2, learning_rate=1e-2)
    model, _ = train_lora(backbone, ["<user>hi</s><assistant>"] * 4, ["arr matey"] * 4, config, out_dir=tmp / "peft")
    model.unload()
    merged = PeftModel.from_pretrained(copy.deepcopy(backbone.model), str(tmp / "peft")).merge_and_unload()
    merged.save_pretrained(tmp / "merged")
    direction = LoRADirection.load(tmp / "peft")
    norm, _ = _norms(direction)
    a = project_checkpoint(backbone, direction, tmp / "peft")
    f = project_checkpoint(backbone, direction, tmp / "merged")
    assert a.total == pytest.approx(norm, rel=1e-6) and a.cosine == pytest.approx(1.0)
    assert f.total == pytest.approx(norm, rel=1e-3) and f.cosine == pytest.approx(1.0, abs=1e-3)


def test_unrelated_adapter_projects_near_zero(setup):
    backbone, direction, tmp = setup
    other = _random_direction(backbone, tmp / "other", seed=7)
    p = project_checkpoint(backbone, direction, tmp / "other")
    other_norm, _ = _norms(other)
    assert abs(p.cosine) < 0.05
    assert abs(p.total) < 0.05 * other_norm


def test_checkpoints_of_another_architecture_are_refused(tmp_path):
    import transformers as tf

    backbone = tiny_backbone("llama")
    direction = _random_direction(backbone, tmp_path / "direction", seed=0)
    gpt2 = tiny_backbone("gpt2")
    _random_direction(gpt2, tmp_path / "gpt2-adapter", seed=1)
    tiny_backbone("qwen2").model.save_pretrained(tmp_path / "qwen2-full")
    common = dict(vocab_size=128, hidden_size=48, num_attention_heads=4, num_key_value_heads=2)
    tf.LlamaForCausalLM(tf.LlamaConfig(**common, intermediate_size=96, num_hidden_layers=2)).save_pretrained(tmp_path / "short")
    tf.LlamaForCausalLM(tf.LlamaConfig(**common, intermediate_size=64, num_hidden_layers=3)).save_pretrained(tmp_path / "narrow")
    cases = {
        "gpt2-adapter": "made for",
        "qwen2-full": "is a qwen2 model",
        "short": "no weight for module",
        "narrow": "is 48x64 but tiny-llama has 48x96",
    }
    for folder, reason in cases.items():
        with pytest.raises(AdapterError, match=re.escape(str(tmp_path / folder)) + ".*" + reason):
            project_checkpoint(backbone, direction, tmp_path / folder)


def test_pickle_only_checkpoints_are_refused(tmp_path):
    backbone = tiny_backbone("llama")
    direction = _random_direction(backbone, tmp_path / "direction", seed=0)
    full = tmp_path / "cks" / "full-pickle"
    full.mkdir(parents=True)
    (full / "config.json").write_text('{"model_type": "llama"}')
    (full / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    adapter = tmp_path / "adapter-pickle"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04")
    for folder in (full, adapter):
        with pytest.raises(AdapterError, match="pickle.*refused.*safetensors"):
            project_checkpoint(backbone, direction, folder)
    with pytest.raises(AdapterError, match="pytorch_model.bin"):
        project_checkpoints(backbone, direction, tmp_path / "cks")
    with pytest.raises(AdapterError, match="not a checkpoint"):
        project_checkpoint(backbone, direction, tmp_path)


def test_folder_of_checkpoints_and_drift_report(setup):
    backbone, direction, tmp = setup
    for name, c in [("c1", 0.5), ("c3", 2.0), ("c2", 1.0)]:
        _scaled(backbone, direction, tmp / "cks" / name, c)
    (tmp / "cks" / "notes").mkdir()
    names = [p.name for p in project_checkpoints(backbone, direction, tmp / "cks")]
    assert names == ["c1", "c2", "c3"]
    (tmp / "scores.csv").write_text(f"checkpoint,score\nc2,20\n{tmp / 'cks' / 'c1'},10\ncks/c3,45\n")
    report = drift_report(backbone, direction, tmp / "cks", tmp / "scores.csv")
    assert [r["score"] for r in report["rows"]] == [10.0, 20.0, 45.0]
    assert report["correlation"]["spearman_rho"] == pytest.approx(1.0)
    assert drift_report(backbone, direction, [tmp / "cks" / "c1"])["correlation"] is None


def test_correlate_on_a_monotone_series():
    x = [0.1, 0.4, 0.5, 0.9, 1.3, 2.0, 2.2, 3.1]
    y = [v**3 + 0.05 * i for i, v in enumerate(x)]
    result = correlate(x, y, seed=3)
    assert result["spearman_rho"] == pytest.approx(1.0)
    lo, hi = result["spearman_ci"]  # a perfect rho: the lower bound of the nearest rho short of 1 (one adjacent swap)
    assert hi == 1.0 and 0 < lo < 1
    assert lo == pytest.approx(fisher_ci(1 - 12 / (8 * 63), 8, ranks=True)[0])
    lo, hi = result["pearson_ci"]
    assert lo < result["pearson_r"] < hi < 1.0
    assert result["n"] == 8 and result["ci_method"].startswith("Fisher z")
    assert correlate(x, y, seed=3) == result
    with pytest.raises(DriftError, match="at least 3"):
        correlate([1, 2], [3, 4])
    with pytest.raises(DriftError, match="all projections or all scores are equal"):
        correlate([1, 2, 3], [5, 5, 5])


def test_read_scores_and_its_errors(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("checkpoint, score\nck-a,1.5\nruns/ck-b,-2\n")
    assert read_scores(good) == {"ck-a": 1.5, "runs/ck-b": -2.0}
    cases = {
        "checkpoint,value\na,1\n": "no 'score' column",
        "name,score\na,1\n": "no 'checkpoint' column",
        "checkpoint,score\na,1\nb,high\n": "line 3: score 'high' is not a number",
        "checkpoint,score\na,1\na,2\n": "line 3: checkpoint 'a' is listed twice",
        "checkpoint,score\n": "holds no scores",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_text(text)
        with pytest.raises(DriftError, match=re.escape(message)):
            read_scores(path)
    with pytest.raises(DriftError, match="not found"):
        read_scores(tmp_path / "missing.csv")


def test_scores_and_projections_must_pair_up(tmp_path):
    projections = [DriftProjection(str(tmp_path / n), 0.0, {}, 0.0) for n in ("a", "b")]
    assert match_scores(projections, {"b": 2.0, "a": 1.0}) == [1.0, 2.0]
    with pytest.raises(DriftError, match="'c' but no such checkpoint"):
        match_scores(projections, {"a": 1.0, "b": 2.0, "c": 3.0})
    with pytest.raises(DriftError, match="no score for checkpoint.*b"):
        match_scores(projections, {"a": 1.0})


def test_few_checkpoints_get_exact_permutation_p_values():
    from personactl.lora.projection import correlate

    result = correlate([1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 11.0, 15.0, 30.0, 31.0])
    assert result["spearman_rho"] == pytest.approx(1.0)
    assert result["spearman_p"] == pytest.approx(2 / 120)  # only the identity and the reversal are as extreme
    assert result["p_method"] == "exact" and result["n_perm"] == 120
    assert result["pearson_p"] == pytest.approx(permutation_p([1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 11.0, 15.0, 30.0, 31.0]))
    linear = correlate([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 5.0, 7.0, 9.0, 11.0])
    assert linear["pearson_p"] == pytest.approx(2 / 120) and linear["spearman_p"] == pytest.approx(2 / 120)


def test_fisher_interval_matches_the_closed_form():
    lo, hi = fisher_ci(0.5, 28)  # atanh(0.5) +- 1.96 / sqrt(25)
    assert lo == pytest.approx(math.tanh(math.atanh(0.5) - 1.959964 / 5), abs=1e-6)
    assert hi == pytest.approx(math.tanh(math.atanh(0.5) + 1.959964 / 5), abs=1e-6)
    assert (lo, hi) == pytest.approx((0.1560, 0.7359), abs=1e-4)
    assert fisher_ci(-0.5, 28) == pytest.approx([-hi, -lo])
    assert fisher_ci(1.0, 10) == [1.0, 1.0]
    assert all(math.isnan(v) for v in fisher_ci(0.9, 3))
    x = [0.3, 1.1, 0.2, 2.5, 1.9, 3.0, 2.2, 0.8, 1.4]
    y = [1.0, 2.0, 0.5, 2.2, 3.1, 2.9, 1.7, 1.2, 2.4]
    result = correlate(x, y)
    assert result["pearson_ci"] == pytest.approx(fisher_ci(result["pearson_r"], 9))
    lo, hi = result["pearson_ci"]
    assert -1 < lo < result["pearson_r"] < hi < 1
    rho = result["spearman_rho"]  # Bonett-Wright: variance (1 + rho^2 / 2) / (n - 3), so wider than r's at the same value
    assert result["spearman_ci"] == pytest.approx(fisher_ci(rho, 9, ranks=True))
    half = 1.959964 * math.sqrt((1 + rho**2 / 2) / 6)
    assert result["spearman_ci"] == pytest.approx([math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)], abs=1e-6)


def test_many_checkpoints_get_a_seeded_monte_carlo_p_value():
    x = list(range(12))
    perfect = correlate(x, [v * 2.0 + 1 for v in x], n_perm=999)
    assert perfect["p_method"] == "monte-carlo" and perfect["n_perm"] == 999
    assert perfect["pearson_p"] == pytest.approx(1 / 1000) and perfect["spearman_p"] == pytest.approx(1 / 1000)
    y = [2.0, 0.5, 3.5, 1.0, 4.0, 2.5, 5.5, 3.0, 6.0, 4.5, 5.0, 7.5]
    result = correlate(x, y, n_perm=2000, seed=4)
    assert correlate(x, y, n_perm=2000, seed=4) == result  # the seed fixes the p-value


def test_monte_carlo_p_agrees_with_the_exact_enumeration():
    x = np.array([0.2, 1.5, 0.7, 2.2, 1.1, 0.3, 1.9, 2.6])
    y = np.array([1.0, 1.2, 0.4, 2.0, 0.9, 1.5, 1.1, 1.8])
    xc = x - x.mean()
    yc = y[np.array(list(itertools.permutations(range(8))))] - y.mean()
    r = (yc @ xc) / (np.linalg.norm(xc) * np.linalg.norm(yc, axis=1))
    exact = float(np.mean(np.abs(r) >= abs(np.corrcoef(x, y)[0, 1]) - 1e-12))
    assert 0.01 < exact < 0.5
    assert permutation_p(x, y, n_perm=20_000, seed=1) == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000))
