"""Verdicts: what a run and an extraction can conclude, from their numbers."""

import pytest

from personactl.expressibility import EXPRESSED_AUROC, MIN_PAIRS, MIN_QUESTIONS, from_scores, level_of
from personactl.verdicts import (
    CLEAR,
    COHERENCE_LOSS,
    DISAGREES,
    JUDGE_BLIND,
    NO_EFFECT,
    Cell,
    sign_test,
    sweep_verdicts,
    verdict_for,
)


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


def test_a_judge_that_cannot_separate_and_no_rise_is_judge_blind():
    v = verdict_for("vector", 12, [_cell(0, 20), _cell(2, 22)], expressed=False)
    assert v.verdict == JUDGE_BLIND and "could not tell" in v.line()


def test_a_rise_the_blind_judge_still_scores_is_named_a_disagreement():
    """The issue's case: 'judge cannot separate' while 9 of 10 questions rose. Neither piece of evidence overrules
    the other silently: the line says both, and what the data support."""
    base = {q: 20.0 + q for q in range(10)}
    steered = {q: 35.0 + q for q in range(9)} | {9: 28.0}
    v = verdict_for("vector", 12, [Cell(0, 24.5, 20, 29, 80, base), Cell(2, 38.3, 33, 43, 80, steered)], expressed=False)
    assert v.verdict == DISAGREES and v.sign.up == 9
    assert "could not tell" in v.line() and "support a rise in what the judge scores, not that it is the trait" in v.line()


def test_best_coefficient_is_the_best_coherent_one_not_the_largest():
    """+3 scores lower than +2: the verdict reports +2."""
    per = lambda t: {q: t + (q % 3) for q in range(9)}  # noqa: E731
    cells = [Cell(0, 21, 19, 23, 80, per(20)), Cell(2, 71, 69, 73, 80, per(70)), Cell(3, 61, 59, 63, 80, per(60))]
    v = verdict_for("vector", 12, cells)
    assert v.verdict == CLEAR and v.coef == 2 and v.rise[0] == pytest.approx(50)


def test_paired_rise_is_adjusted_for_the_coefficients_tried():
    """A rise whose 95% CI just clears 0 with one coefficient does not once four coefficients were tried."""
    base = {q: 50.0 for q in range(8)}
    steered = {q: 50.0 + d for q, d in enumerate([6, -2, 5, 1, 7, -1, 4, 3])}
    cells = [Cell(0, 50, 45, 55, 80, base), Cell(1, 52.9, 48, 58, 80, steered)]
    assert verdict_for("vector", 1, cells).verdict == CLEAR
    flat = [Cell(c, 50, 45, 55, 80, base) for c in (2, 3, 4)]
    assert verdict_for("vector", 1, cells + flat).verdict == NO_EFFECT


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


@pytest.mark.parametrize(
    "auroc, lo, level",
    [
        (0.95, EXPRESSED_AUROC, "strongly expressed"),
        (0.80, EXPRESSED_AUROC - 0.01, "weakly expressed"),
        (EXPRESSED_AUROC - 0.01, 0.5, "not expressed"),
        (0.80, 0.45, "too few answers to say"),
    ],
)
def test_expressibility_levels_follow_the_threshold_and_its_ci(auroc, lo, level):
    assert level_of(auroc, lo, 20, 100) == level


def test_too_few_questions_or_pairs_cannot_be_strongly_expressed():
    """Hanley-McNeil called 2-vs-2 perfectly separated answers 'strongly expressed'."""
    assert level_of(1.0, 0.9, MIN_QUESTIONS - 1, 100) == "too few answers to say"
    assert level_of(1.0, 0.9, 20, MIN_PAIRS - 1) == "too few answers to say"
    tiny = from_scores("pirate", "openai:x", [90, 95], [10, 5])
    assert tiny.level == "too few answers to say" and tiny.expressed is None and "at least" in tiny.line()


def test_expressibility_from_llm_scores_reports_gap_filter_passes_and_a_ci_by_question():
    pos = [90, 80, 95, None, 85, 88, 92, 70, 99, 91, 86, 83]
    neg = [10, 20, 5, 30, 15, 12, 8, 25, 18, 7, 11, 22]
    e = from_scores("pirate", "openai:x", pos, neg, passed=11, groups=list(range(12)))
    assert e.level == "strongly expressed" and e.auroc == 1.0 and e.n_questions == 12
    assert "11/12 pairs pass the filter" in e.line() and "over 12 questions" in e.line()
    pairs_of_two = from_scores("pirate", "openai:x", pos, neg, groups=[q // 2 for q in range(12)])
    assert pairs_of_two.auroc_lo == pytest.approx(0.05 ** (1 / 6))  # perfect separation: exact bound on 6 questions
    assert pairs_of_two.level == "weakly expressed"
    flat = from_scores("contrarian", "openai:x", [50, 40, 60] * 4, [55, 45, 50] * 4, groups=list(range(12)))
    assert flat.level == "not expressed" and "will not be meaningful" in flat.line()
    assert flat.auroc_lo < 0.5 < flat.auroc_hi
