"""Verdicts: what a run and an extraction can conclude, from their numbers."""

import pytest

from personactl.expressibility import EXPRESSED_AUROC, auroc_lower_bound, from_scores, level_of
from personactl.verdicts import CLEAR, COHERENCE_LOSS, JUDGE_BLIND, NO_EFFECT, Cell, sign_test, sweep_verdicts, verdict_for


def _cell(coef, trait, half=5.0, coherence=80.0, per_question=None):
    return Cell(coef, trait, trait - half, trait + half, coherence, per_question or {})


def test_clear_rise_picks_the_best_coherent_coefficient():
    cells = [_cell(0, 20), _cell(1, 40), _cell(2, 70), _cell(3, 90, coherence=30)]
    v = verdict_for("vector", 12, cells)
    assert v.verdict == CLEAR and v.coef == 2 and v.trait == (70, 65, 75)
    assert "vector @ layer 12: clear rise (trait 70.0 [65.0, 75.0] at +2 vs 20.0 [15.0, 25.0] at 0, coherence 80)" in v.line()


def test_a_rise_only_where_coherence_fell_is_named_so():
    v = verdict_for("vector", 12, [_cell(0, 20), _cell(1, 22), _cell(3, 90, coherence=30)])
    assert v.verdict == COHERENCE_LOSS and v.coef == 3


def test_overlapping_intervals_are_no_measurable_effect():
    v = verdict_for("vector", 12, [_cell(0, 20, half=10), _cell(2, 35, half=10)])
    assert v.verdict == NO_EFFECT and v.coef == 2


def test_a_judge_that_cannot_separate_overrides_any_rise():
    v = verdict_for("vector", 12, [_cell(0, 20), _cell(2, 70)], expressed=False)
    assert v.verdict == JUDGE_BLIND and "could not tell" in v.line()


def test_without_coefficient_zero_there_is_nothing_to_compare():
    v = verdict_for("vector", 12, [_cell(1, 20), _cell(2, 70)])
    assert v.verdict == NO_EFFECT and "coefficient 0" in v.note


def test_unknown_coherence_does_not_block_a_clear_rise():
    v = verdict_for("adapter", None, [_cell(0, 20, coherence=None), _cell(1, 70, coherence=None)])
    assert v.verdict == CLEAR and v.line().startswith("adapter: clear rise")


def test_sign_test_counts_questions_and_gives_a_binomial_p():
    base = {q: 10.0 for q in range(10)}
    steered = {q: 20.0 for q in range(9)} | {9: 10.0}
    s = sign_test(base, steered)
    assert (s.up, s.down, s.ties) == (9, 0, 1)
    assert s.p_value == pytest.approx(2 / 2**9)  # two-sided, ties dropped
    assert sign_test({}, steered) is None


def test_one_question_cannot_carry_the_mean():
    """A big rise on one question and small falls elsewhere: the mean rises, the sign test says otherwise."""
    base = {q: 50.0 for q in range(8)}
    steered = {0: 100.0} | {q: 45.0 for q in range(1, 8)}
    v = verdict_for("vector", 5, [Cell(0, 50, 45, 55, 80, base), Cell(2, 68, 60, 66, 80, steered)])
    assert v.sign.up == 1 and v.sign.down == 7
    assert "1/8 questions rose, 7 fell" in v.line()


def test_sweep_verdicts_group_summary_rows_and_records_by_method_and_layer():
    summary = [
        {"method": m, "layer": l, "coef": c, "trait_mean": t, "trait_lo": t - 3, "trait_hi": t + 3, "coherence_mean": 90.0}
        for m, l, c, t in [("vector", 5, 0.0, 20), ("vector", 5, 2.0, 60), ("vector", 9, 0.0, 20), ("vector", 9, 2.0, 22)]
    ]
    records = [{"method": "vector", "layer": 5, "coef": c, "question_id": q, "trait": 20 + 40 * c / 2 + q} for c in (0.0, 2.0) for q in range(4)]
    verdicts = {v.layer: v for v in sweep_verdicts(summary, records)}
    assert verdicts[5].verdict == CLEAR and verdicts[5].sign.up == 4
    assert verdicts[9].verdict == NO_EFFECT and verdicts[9].sign is None


@pytest.mark.parametrize("auroc, lo, level", [
    (0.95, EXPRESSED_AUROC, "strongly expressed"), (0.80, EXPRESSED_AUROC - 0.01, "weakly expressed"),
    (EXPRESSED_AUROC - 0.01, 0.5, "not expressed"),
])
def test_expressibility_levels_follow_the_threshold_and_its_ci(auroc, lo, level):
    assert level_of(auroc, lo) == level


def test_auroc_ci_narrows_with_more_answers_and_matches_a_bootstrap():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.2, 1, 60), rng.normal(0, 1, 60)
    auroc = roc_auc_score(np.r_[np.ones(60), np.zeros(60)], np.r_[pos, neg])
    boot = []
    for _ in range(2000):
        p, n = rng.choice(pos, 60), rng.choice(neg, 60)
        boot.append(roc_auc_score(np.r_[np.ones(60), np.zeros(60)], np.r_[p, n]))
    assert auroc_lower_bound(auroc, 60, 60) == pytest.approx(np.percentile(boot, 2.5), abs=0.02)
    assert auroc_lower_bound(auroc, 15, 15) < auroc_lower_bound(auroc, 60, 60) < auroc


def test_expressibility_from_llm_scores_reports_gap_and_filter_passes():
    e = from_scores("pirate", "openai:x", [90, 80, 95, None], [10, 20, 5, 30], passed=3)
    assert e.level == "strongly expressed" and e.auroc == 1.0 and e.gap == pytest.approx(265 / 3 - 65 / 4)
    assert "3/4 pairs pass the filter" in e.line()
    flat = from_scores("contrarian", "openai:x", [50, 40, 60], [55, 45, 50])
    assert flat.level == "not expressed" and "will not be meaningful" in flat.line()
