"""Calibration of the expressibility estimator on simulated answers (no model).

Design (the real structure of extraction): 20 questions, each answered under 5 instruction pairs, so 100 positive
and 100 negative answers; every answer to a question shares that question's topic. Embeddings are simulated in 16
dimensions: topic (sd 1.5 per dimension) + answer noise (sd 1) + a trait shift on the positive side when the trait
is expressed. The judge's own out-of-fold classifier (judges.embedding.heldout_probabilities) scores them.
"""

import numpy as np

from personactl.expressibility import level_of
from personactl.intervals import auroc_ci
from personactl.judges.embedding import heldout_probabilities

QUESTIONS, PAIRS, DIM = 20, 5, 16


def answers(rng, shift=0.0):
    topic = rng.normal(0, 1.5, (QUESTIONS, DIM))
    groups = np.repeat(np.arange(QUESTIONS), PAIRS)
    pos = topic[groups] + rng.normal(0, 1, (len(groups), DIM))
    pos[:, 0] += shift
    neg = topic[groups] + rng.normal(0, 1, (len(groups), DIM))
    return np.vstack([pos, neg]), np.r_[np.ones(len(groups)), np.zeros(len(groups))], np.r_[groups, groups]


def heldout_auroc(x, y, groups, grouped=True, seed=0):
    if not grouped:  # answers held out one by one, 5 folds (the old estimator)
        scores, _ = heldout_probabilities(x, y, np.arange(len(y)), folds=5, seed=seed)
        return auroc_ci(scores[y == 1], scores[y == 0], groups[y == 1], groups[y == 0])
    scores, fold_of = heldout_probabilities(x, y, groups, seed=seed)
    return auroc_ci(scores[y == 1], scores[y == 0], groups[y == 1], groups[y == 0], fold_of=fold_of)


def test_placebo_lands_at_chance_with_a_ci_that_covers_it():
    """No trait at all (both instructions ask for the same thing): mean AUROC near 0.5, and the clustered CI
    excludes 0.5 in at most 5% + noise of 300 simulated extractions."""
    rng = np.random.default_rng(0)
    results = [heldout_auroc(*answers(rng)) for _ in range(300)]
    aurocs = np.array([a for a, _, _ in results])
    excluded = np.mean([not (lo <= 0.5 <= hi) for _, lo, hi in results])
    assert abs(aurocs.mean() - 0.5) < 0.03 and excluded <= 0.07


def test_holding_out_answers_one_by_one_anti_learns():
    """The design reproduces the bug: out-of-fold by answer (other answers of the same question in training)
    scores a placebo well below chance, which holding out whole questions does not."""
    rng = np.random.default_rng(1)
    ungrouped = np.mean([heldout_auroc(*answers(rng), grouped=False)[0] for _ in range(20)])
    assert ungrouped < 0.42


def verdict_of(x, y, groups):
    auroc, lo, _ = heldout_auroc(x, y, groups)
    return level_of(auroc, lo, QUESTIONS, int(y.sum()))


def test_a_shuffled_label_placebo_is_not_expressed():
    """A real trait's answers with each pair's labels swapped at random: the trait no longer follows the label, so
    never 'strongly expressed', and 'not expressed' nearly always."""
    rng = np.random.default_rng(2)
    levels = []
    for _ in range(60):
        x, y, groups = answers(rng, shift=3.0)
        n = len(y) // 2
        swap = np.flatnonzero(rng.random(n) < 0.5)
        x[np.r_[swap, swap + n]] = x[np.r_[swap + n, swap]]
        levels.append(verdict_of(x, y, groups))
    assert "strongly expressed" not in levels and levels.count("not expressed") >= 54


def test_auroc_ci_covers_a_known_auroc():
    """Scores (a judge's, no fitting) = question effect (sd 1) + answer noise (sd 1) + 0.8 on the positive side:
    within a question the AUROC is Phi(0.8 / sqrt(2)) = 0.714; the CI covers it in 93-97% of 400 runs (20
    questions x 5 pairs)."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    truth = float(norm.cdf(0.8 / np.sqrt(2)))
    groups = np.repeat(np.arange(QUESTIONS), PAIRS)
    covered = 0
    for _ in range(400):
        question = rng.normal(0, 1, QUESTIONS)
        pos = question[groups] + rng.normal(0, 1, len(groups)) + 0.8
        neg = question[groups] + rng.normal(0, 1, len(groups))
        _, lo, hi = auroc_ci(pos, neg, groups, groups)
        covered += lo <= truth <= hi
    assert 0.93 <= covered / 400 <= 0.97


def test_an_expressed_trait_is_found():
    rng = np.random.default_rng(4)
    assert verdict_of(*answers(rng, shift=3.0)) == "strongly expressed"
