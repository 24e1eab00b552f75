"""experiments/safety_neurons.py --from-json: the stored numbers give back the intervals and verdicts the code computes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from personactl.safety.dynamics import score_dynamics
from personactl.safety.refusal import rate_with_ci, wilson
from personactl.safety.report import collapsed, tables

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import safety_neurons  # noqa: E402


def test_wilson_from_counts_is_the_interval_of_the_flags():
    for hits, n in [(0, 48), (14, 48), (48, 48), (3, 7)]:
        assert wilson(hits, n) == rate_with_ci([True] * hits + [False] * (n - hits))
    assert wilson(0, 48).high == pytest.approx(0.0741, abs=1e-4)


def test_a_stored_rate_gets_its_wilson_interval_back_from_its_counts():
    """An old bootstrap rate read 0 of 48 as [0, 0]; rate x n gives the count, and the count the Wilson interval."""
    stored = {
        "keyword": {"rate": 0.0, "low": 0.0, "high": 0.0, "n": 48},
        "collapsed": {"rate": 46 / 48, "low": 0.9, "high": 1.0, "n": 48},
        "agreement": {"agree": 1.0, "kappa": None, "n": 48},
    }
    again = safety_neurons._with_wilson(stored)
    assert again["keyword"] == wilson(0, 48).to_dict() and again["collapsed"] == wilson(46, 48).to_dict()
    assert again["agreement"] == stored["agreement"]


def test_collapse_share_is_read_from_a_stored_rate_when_the_answers_are_not_kept():
    answers = ["yes " * 40, "A clear, helpful answer about baking bread at home."]
    measure = {"answers": answers}
    stored = {"collapsed": rate_with_ci([True, False]).to_dict()}
    assert collapsed(stored) == collapsed(measure) == "50% [9, 91]"


def _dynamics(seed: int) -> dict:
    """score_dynamics on 4 blocks x 3 matrices with block-shared changes (as an input norm moves q, k, v together)."""
    generator = torch.Generator().manual_seed(seed)
    before, after, frozen, random = {}, {}, {}, {}
    for block in range(4):
        shift = 1.0 + 0.05 * float(torch.randn(1, generator=generator))
        for part in ("q", "k", "v"):
            name = f"model.layers.{block}.attn.{part}_proj"
            before[name] = torch.rand(6, 5, generator=generator) + 0.1
            after[name] = before[name] * shift * (1 + 0.01 * torch.randn(6, 5, generator=generator))
            frozen[name] = torch.rand(6, 5, generator=generator) < 0.3
            random[name] = torch.rand(6, 5, generator=generator) < 0.3
    return score_dynamics(before, after, frozen, random)


@pytest.mark.parametrize("seed", [0, 1])
def test_overall_changes_from_stored_blocks_are_score_dynamics_own(seed):
    """The per-block means a JSON keeps give the same overall means, t intervals over blocks and counts as the matrices."""
    result = json.loads(json.dumps(_dynamics(seed)))  # through JSON, as stored: block keys become strings
    again = safety_neurons._overall(result["per_block"], result["overall"])
    assert again.keys() == result["overall"].keys()
    for key, stat in result["overall"].items():
        assert again[key] == pytest.approx(stat, rel=1e-9, abs=1e-12)
        assert stat["blocks"] == 4


def test_overall_changes_refuse_blocks_that_do_not_hold_every_matrix():
    result = json.loads(json.dumps(_dynamics(0)))
    del result["per_block"]["3"]
    with pytest.raises(SystemExit, match="rerun the study"):
        safety_neurons._overall(result["per_block"], result["overall"])


def test_the_safety_sections_are_recomputed_from_their_stored_data():
    """The three safety tables in docs/experiments.md are what the current intervals and verdicts give on the stored
    counts and block means (`python experiments/safety_neurons.py --from-json docs/experiments` rewrites them)."""
    results, moved = safety_neurons.from_json(ROOT / "docs" / "experiments")
    rows = [rows for rows, _ in tables(results).values()]
    stored = [json.loads((ROOT / "docs" / "experiments" / f"safety_{n}.json").read_text()) for n in ("align", "prune", "dynamics")]
    assert rows == [data["rows"] for data in stored]
    assert moved == stored[2]["masked_entries_moved"]
    assert safety_neurons._without_answers(results)["finetunes"] == stored[2]["finetunes"]
