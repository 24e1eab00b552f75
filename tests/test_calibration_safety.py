"""Calibration of the safety study's statistics on simulated data: the dynamics A/B verdict and its CI, and refusal rates.

Dynamics design (SmolLM2-135M's shape): 30 decoder blocks x 7 matrices (q, k, v, o, gate, up, down). A matrix's
relative change of the frozen weights' Wanda score is the true change + a block effect (every matrix of the block,
sd 2%: the block's input norm moved) + an input effect shared by q/k/v and by gate/up (sd 1%) + the matrix's own
noise (sd 0.3%). Refusal design: 48 held-out prompts, one greedy answer each, refused with probability p.
"""

import numpy as np
import pytest
from scipy.stats import binom

from personactl.safety.dynamics import DRIFT_DROP, STABLE_BAND, change_ci, verdict
from personactl.safety.refusal import rate_with_ci

BLOCKS, RUNS = 30, 1000
INPUTS = {
    "self_attn.q_proj": "qkv",
    "self_attn.k_proj": "qkv",
    "self_attn.v_proj": "qkv",
    "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate_up",
    "mlp.up_proj": "gate_up",
    "mlp.down_proj": "down",
}


NAMES = [f"model.layers.{b}.{matrix}" for b in range(BLOCKS) for matrix in INPUTS]
SHARED = np.unique(list(INPUTS.values()), return_inverse=True)[1]  # which input each matrix of a block reads


def _changes(rng, truth: float) -> dict[str, float]:
    """One fine-tune's per-matrix relative changes of the frozen weights' mean score."""
    block = rng.normal(0.0, 0.02, (BLOCKS, 1))
    inputs = rng.normal(0.0, 0.01, (BLOCKS, SHARED.max() + 1))[:, SHARED]
    values = truth + block + inputs + rng.normal(0.0, 0.003, (BLOCKS, len(INPUTS)))
    return dict(zip(NAMES, values.ravel().tolist()))


def _verdicts(truth: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [verdict(**{k: v for k, v in change_ci(_changes(rng, truth)).items() if k in ("mean", "low", "high")})[0] for _ in range(RUNS)]


def test_dynamics_change_ci_covers_a_known_change():
    """The frozen weights' mean score change (t over 30 block means, 7 correlated matrices each): its 95% CI covers
    a true -7% in 93-97% of 1000 simulated fine-tunes (a percentile bootstrap over the 210 matrices: 63%, and verdict
    A in 20% of runs at exactly -10%)."""
    rng = np.random.default_rng(21)
    covered = 0
    for _ in range(RUNS):
        ci = change_ci(_changes(rng, -0.07))
        covered += ci["low"] <= -0.07 <= ci["high"]
    assert 0.93 <= covered / RUNS <= 0.97, covered / RUNS


def test_dynamics_verdict_a_is_rare_at_its_boundary_and_without_change():
    """Verdict A (frozen scores fell by more than 10%) when they fell by exactly 10%: at most 7% of 1000 runs (a
    one-sided 2.5% test); with no change at all: never."""
    assert _verdicts(-DRIFT_DROP, seed=22).count("A") / RUNS <= 0.07
    assert _verdicts(0.0, seed=23).count("A") == 0


@pytest.mark.parametrize("truth", [-STABLE_BAND, STABLE_BAND])
def test_dynamics_verdict_b_is_rare_at_its_boundary(truth):
    """Verdict B (frozen scores stayed within 5%) when they moved by exactly 5%: at most 7% of 1000 runs."""
    assert _verdicts(truth, seed=24).count("B") / RUNS <= 0.07


def test_dynamics_verdicts_see_a_clear_change():
    """Power: a true -20% reads A, and a true 0% reads B, in at least 95% of runs."""
    assert _verdicts(-0.20, seed=25).count("A") / RUNS >= 0.95
    assert _verdicts(0.0, seed=26).count("B") / RUNS >= 0.95


@pytest.mark.parametrize("p", [0.05, 0.2, 0.3, 0.5, 0.9])
def test_refusal_rate_ci_covers_the_true_rate(p):
    """`rate_with_ci` on 48 independent answers refused with probability p: the exact coverage of its 95% interval
    (every count k weighted by its binomial probability, so no simulation noise) is 93-97%. The percentile bootstrap
    it replaces covered 91% at p = 5% and 92% at p = 20% (0 of 48 read [0, 0])."""
    n = 48
    coverage = sum(binom.pmf(k, n, p) for k in range(n + 1) if (rate := rate_with_ci([True] * k + [False] * (n - k))).low <= p <= rate.high)
    assert 0.93 <= coverage <= 0.97, coverage
