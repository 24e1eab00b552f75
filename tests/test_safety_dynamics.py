"""The safety dynamics verdict rule and the relative score change, on hand-made numbers."""

import math

import pytest
import torch

from personactl.safety.dynamics import block_of, change_ci, score_dynamics, verdict


@pytest.mark.parametrize(
    "mean, low, high, expected",
    [
        (-0.20, -0.25, -0.15, "A"),  # the whole CI below -10%
        (-0.08, -0.12, -0.04, "neither"),  # reaches below -10% but not wholly: a rule reading `low` for A says A
        (-0.11, -0.13, -0.095, "neither"),  # the upper bound is above -10%
        (0.00, -0.03, 0.04, "B"),  # inside +-5%
        (0.00, -0.06, 0.04, "neither"),  # the lower bound leaves the band: a rule with low and high swapped says B
        (0.02, -0.01, 0.06, "neither"),  # the upper bound leaves the band
        (-0.05, -0.05, -0.05, "B"),  # the band's edge is inside it
    ],
)
def test_the_verdict_rule(mean, low, high, expected):
    assert verdict(mean, low, high).split(":")[0] == expected


def _model(after_scale: float, blocks: int = 4) -> tuple[dict, dict, dict, dict]:
    """Hand-made scores of `blocks` blocks x 2 matrices: the frozen half scaled by `after_scale`, the rest by 1.1."""
    before, after, frozen, random = {}, {}, {}, {}
    for b in range(blocks):
        for matrix in ("self_attn.q_proj", "mlp.down_proj"):
            name = f"model.layers.{b}.{matrix}"
            before[name] = torch.tensor([[1.0, 2.0], [4.0, 3.0]])
            frozen[name] = torch.tensor([[True, True], [False, False]])
            random[name] = torch.tensor([[True, False], [True, False]])
            after[name] = before[name] * torch.where(frozen[name], after_scale, 1.1)
    return before, after, frozen, random


@pytest.mark.parametrize("scale, expected", [(0.8, "A"), (1.0, "B"), (0.93, "neither"), (1.25, "neither")])
def test_the_change_is_after_over_before_minus_one(scale, expected):
    """Frozen scores multiplied by 0.8 fell by 20% (not the +25% of before/after - 1): verdict A; unchanged: B."""
    result = score_dynamics(*_model(scale))
    frozen = result["overall"]["frozen_mean"]
    assert frozen["mean"] == pytest.approx(scale - 1) and frozen["low"] == pytest.approx(scale - 1)
    assert result["overall"]["others_mean"]["mean"] == pytest.approx(0.1)
    assert result["overall"]["frozen_median"]["mean"] == pytest.approx(scale - 1)
    assert (frozen["matrices"], frozen["blocks"]) == (8, 4)
    assert result["verdict"].split(":")[0] == expected


def test_mean_and_median_changes_differ_where_they_should():
    """Before [1, 2, 4] -> after [1, 1, 4]: the mean score fell by 1/7, the median weight did not change."""
    name = "model.layers.0.mlp.up_proj"
    before, after = {name: torch.tensor([1.0, 2.0, 4.0, 5.0])}, {name: torch.tensor([1.0, 1.0, 4.0, 6.0])}
    mask = {name: torch.tensor([True, True, True, False])}
    row = score_dynamics(before, after, mask, {name: torch.zeros(4, dtype=torch.bool)})["per_matrix"][name]
    assert row["frozen_mean"] == pytest.approx(6 / 7 - 1) and row["frozen_median"] == 0.0
    assert row["others_mean"] == pytest.approx(0.2)
    assert math.isnan(row["random_mean"])  # an empty set has no change


def test_matrices_of_one_block_count_once():
    """Two blocks: one with 3 matrices at -30%, one with 1 at 0%: the mean over blocks is -15%, not -22.5%."""
    changes = {
        "model.layers.0.self_attn.q_proj": -0.3,
        "model.layers.0.self_attn.k_proj": -0.3,
        "model.layers.0.self_attn.v_proj": -0.3,
        "model.layers.1.mlp.down_proj": 0.0,
        "lm_head": float("nan"),
    }
    ci = change_ci(changes)
    assert ci["mean"] == pytest.approx(-0.15) and (ci["matrices"], ci["blocks"]) == (4, 2)
    assert block_of("model.layers.12.mlp.up_proj") == 12 and block_of("lm_head") == "lm_head"
