"""Calibration of the drift correlation (`lora.projection.correlate`): its CIs and p-values on simulated checkpoints.

Design, as in experiments/drift_mixtures.py: 18 fine-tuned checkpoints, each with its own latent trait shift s
(the share of trait answers it was trained on). The code sees one pair per checkpoint: its weight projection
(s plus noise; in the null design half the checkpoints come from another LoRA initialisation, whose projections
are 20x smaller, as seed 1's were) and its judged trait, the mean over the same 12 held-out questions of one
answer's score each (question effect + b * s + answer noise). The unit is the checkpoint.
"""

import math

import numpy as np

from personactl.lora.projection import correlate

CHECKPOINTS, QUESTIONS, RUNS, COVERAGE_RUNS = 18, 12, 400, 1000
ANSWER_SD, QUESTION_SD, PROJECTION_NOISE = 20.0, 15.0, 0.3


def _checkpoints(rng, b: float, two_inits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    shift = rng.normal(0.0, 1.0, CHECKPOINTS)
    scale = np.where(rng.random(CHECKPOINTS) < 0.5, 1.0, 0.05) if two_inits else np.ones(CHECKPOINTS)
    projection = scale * (shift + rng.normal(0.0, PROJECTION_NOISE, CHECKPOINTS))
    questions = rng.normal(0.0, QUESTION_SD, QUESTIONS)  # the same held-out questions judge every checkpoint
    judged = (40.0 + questions[None, :] + b * shift[:, None] + rng.normal(0.0, ANSWER_SD, (CHECKPOINTS, QUESTIONS))).mean(1)
    return projection, judged


def _true_correlations(b: float) -> tuple[float, float]:
    """Pearson's and Spearman's population correlation of the (bivariate normal) one-initialisation design."""
    r = b / math.sqrt((1 + PROJECTION_NOISE**2) * (b * b + ANSWER_SD**2 / QUESTIONS))
    return r, 6 / math.pi * math.asin(r / 2)


def test_drift_correlation_without_a_link_rarely_excludes_zero():
    """Null (judged trait independent of the projection; checkpoints from two LoRA initialisations): Pearson's and
    Spearman's 95% CIs exclude 0, and their permutation p-values fall below 0.05, in at most 7% of 400 runs."""
    rng = np.random.default_rng(11)
    excluded = {"pearson_ci": 0, "spearman_ci": 0, "pearson_p": 0, "spearman_p": 0}
    for run in range(RUNS):
        c = correlate(*_checkpoints(rng, b=0.0, two_inits=True), seed=run, n_perm=199)
        for key in ("pearson_ci", "spearman_ci"):
            excluded[key] += c[key][0] > 0 or c[key][1] < 0
        for key in ("pearson_p", "spearman_p"):
            excluded[key] += c[key] < 0.05
    assert all(count / RUNS <= 0.07 for count in excluded.values()), excluded


def test_drift_correlation_cis_cover_a_known_correlation():
    """Known link (b = 5 trait points per unit of shift: true r = 0.63, rho = 0.61): Pearson's and Spearman's
    95% CIs cover the true value in 93-97% of 1000 runs (a percentile bootstrap over checkpoints covered ~90%)."""
    rng = np.random.default_rng(12)
    r, rho = _true_correlations(5.0)
    covered = {"pearson_ci": 0, "spearman_ci": 0}
    for _ in range(COVERAGE_RUNS):
        c = correlate(*_checkpoints(rng, b=5.0), n_perm=9)
        covered["pearson_ci"] += c["pearson_ci"][0] <= r <= c["pearson_ci"][1]
        covered["spearman_ci"] += c["spearman_ci"][0] <= rho <= c["spearman_ci"][1]
    assert all(0.93 <= count / COVERAGE_RUNS <= 0.97 for count in covered.values()), covered


def test_a_perfect_rank_correlation_of_few_checkpoints_is_not_certain():
    """Spearman's rho = 1 at 6 checkpoints: the interval reaches 1 but not from 1 (a quarter of the draws at true 0.9
    are perfect at n = 5, so [1, 1] would miss the truth in each of them)."""
    c = correlate([0.1, 0.4, 0.5, 0.9, 1.3, 2.0], [1.0, 8.0, 27.0, 64.0, 125.0, 216.0], n_perm=9)
    assert c["spearman_rho"] == 1.0
    lo, hi = c["spearman_ci"]
    assert hi == 1.0 and 0.0 < lo < 0.9
