"""A LoRA at a lower rank: the truncated SVD of each module's delta, checked against a dense SVD on a tiny llama."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone

from personactl.cli import run
from personactl.errors import OptionError
from personactl.lora import lower_rank
from personactl.lora.direction import LoRADirection, LoRAFactors

MODULES = ("model.layers.1.self_attn.q_proj", "model.layers.2.mlp.down_proj", "model.layers.0.self_attn.k_proj")
RANK = 6


def _direction(rslora: bool = False) -> LoRADirection:
    """A random rank-6 LoRA on three modules of the tiny llama (48x48, 48x96, 24x48), scaling 2."""
    backbone = tiny_backbone("llama")
    torch.manual_seed(3)
    factors = {}
    for name in MODULES:
        out_f, in_f = backbone.model.get_submodule(name).weight.shape
        factors[name] = LoRAFactors(torch.randn(RANK, in_f), torch.randn(out_f, RANK), 2.0)
    alpha = 2.0 * (RANK**0.5 if rslora else RANK)
    return LoRADirection(factors, {"peft_type": "LORA", "r": RANK, "lora_alpha": alpha, "use_rslora": rslora}, {"base_model_type": "llama"})


def test_the_adapter_s_own_rank_keeps_all_of_the_delta():
    direction = _direction()
    same, energy = lower_rank(direction, RANK)
    assert energy == pytest.approx(1.0, abs=1e-12)
    for name, factors in direction.modules.items():
        torch.testing.assert_close(same.modules[name].delta(), factors.delta(), rtol=1e-5, atol=1e-5)
        assert same.modules[name].rank == RANK and same.modules[name].scaling == 2.0


@pytest.mark.parametrize("rslora", [False, True])
def test_rank_k_is_the_dense_truncated_svd_and_keeps_its_energy_share(tmp_path, rslora):
    direction = _direction(rslora)
    for k in (1, 2, 4):
        low, energy = lower_rank(direction, k)
        kept = total = 0.0
        for name, factors in direction.modules.items():
            u, s, vh = torch.linalg.svd(factors.delta().double(), full_matrices=False)
            kept += float((s[:k] ** 2).sum())
            total += float((s**2).sum())
            best = (u[:, :k] * s[:k]) @ vh[:k]
            torch.testing.assert_close(low.modules[name].delta().double(), best, rtol=1e-4, atol=1e-4)
            assert low.modules[name].A.shape[0] == k
        assert energy == pytest.approx(kept / total, rel=1e-6) and energy < 1.0
        assert low.metadata["lower_rank"] == {"from_rank": RANK, "rank": k, "energy_kept": energy}
        low.save(tmp_path / f"k{k}-{rslora}")  # the PEFT config reproduces the scaling: loaded, the same delta
        loaded = LoRADirection.load(tmp_path / f"k{k}-{rslora}")
        for name in MODULES:
            assert loaded.modules[name].scaling == pytest.approx(2.0)
            torch.testing.assert_close(loaded.modules[name].delta(), low.modules[name].delta())


def test_a_module_whose_delta_has_fewer_singular_values_than_the_rank_gets_zero_factors():
    """A 2-row module (its delta has rank <= 2) truncated to rank 3: one zero column and row, the delta exact."""
    narrow = LoRADirection({"m": LoRAFactors(torch.randn(4, 48), torch.randn(2, 4), 1.0)}, {"r": 4, "lora_alpha": 4.0})
    low, energy = lower_rank(narrow, 3)
    assert energy == pytest.approx(1.0) and low.modules["m"].A.shape == (3, 48) and low.modules["m"].B.shape == (2, 3)
    assert not low.modules["m"].A[2].any() and not low.modules["m"].B[:, 2].any()
    torch.testing.assert_close(low.modules["m"].delta(), narrow.modules["m"].delta(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [0, -1, RANK + 1])
def test_a_rank_outside_one_to_the_adapter_s_rank_is_refused(rank):
    with pytest.raises(OptionError, match=f"--rank {rank} is outside 1..{RANK}"):
        lower_rank(_direction(), rank)


@pytest.mark.parametrize("rank", ["0", str(RANK + 1)])
def test_export_gguf_lora_refuses_a_bad_rank_in_one_line_before_loading_a_model(tmp_path, capsys, rank):
    _direction().save(tmp_path / "adapter")
    code = run(["export", "gguf-lora", str(tmp_path / "adapter"), "--rank", rank, "--out", str(tmp_path / "x.gguf"), "--model", "no-such-model"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"--rank {rank} is outside 1..{RANK}" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()
