"""intervals.py: the means and AUROCs every verdict rests on, checked against independent computations."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from personactl.intervals import auroc_ci, group_means, mean_ci, paired_difference_ci, t_interval


def test_mean_ci_is_students_t_at_95_percent():
    """The width is checked against scipy's own t interval, so an 80% (or 50%) interval cannot pass."""
    values = [12.0, 30.0, 41.0, 55.0, 18.0, 77.0, 64.0, 23.0]
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean_ci(values) == pytest.approx((np.mean(values), lo, hi))


def test_mean_ci_averages_each_question_first():
    """Samples of one question count once: three copies of a question's answer do not narrow the interval."""
    values = [10.0, 10.0, 10.0, 50.0, 30.0, 70.0]
    groups = ["a", "a", "a", "b", "c", "d"]
    assert group_means(values, groups) == {"a": 10.0, "b": 50.0, "c": 30.0, "d": 70.0}
    assert mean_ci(values, groups) == pytest.approx(t_interval([10.0, 50.0, 30.0, 70.0]))
    assert mean_ci(values, groups)[0] == 40.0  # mean over questions, not over answers (28.3)


def test_unscored_values_are_left_out_and_degenerate_cases_say_so():
    assert mean_ci([None, 4.0, float("nan"), 6.0]) == pytest.approx(t_interval([4.0, 6.0]))
    assert mean_ci([7.0, 7.0, 7.0]) == (7.0, 7.0, 7.0)
    m, lo, hi = mean_ci([5.0])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in mean_ci([]))


def test_a_rate_interval_stays_inside_its_range_and_only_there():
    m, lo, hi = mean_ci([0.0] * 9 + [1.0], bounds=(0.0, 1.0))
    assert m == 0.1 and lo == 0.0 and 0.1 < hi <= 1.0
    assert mean_ci([0.0] * 9 + [1.0])[1] < 0  # no bounds given: plain t


def test_few_units_are_not_clipped_to_their_own_range():
    """Three units that all rose a little: the interval must reach past them (clipped to their range it would be
    their range, 75% coverage at three units)."""
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem([1.0, 2.0, 3.0])))
    assert lo < 1.0 and hi > 3.0


def test_paired_difference_uses_the_questions_in_both():
    a, b = {1: 10.0, 2: 20.0, 3: 30.0, 4: 5.0}, {1: 8.0, 2: 15.0, 3: 31.0}
    assert paired_difference_ci(a, b) == pytest.approx(t_interval([2.0, 5.0, -1.0]))


def test_auroc_compares_answers_to_the_same_question_and_counts_ties_half():
    pos, neg = [0.9, 0.4, 0.6, 0.7], [0.4, 0.1, 0.8, 0.2]
    groups = ["a", "a", "b", "b"]
    auroc, lo, hi = auroc_ci(pos, neg, groups, groups)
    a = roc_auc_score([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1])  # question a alone
    b = roc_auc_score([1, 1, 0, 0], [0.6, 0.7, 0.8, 0.2])
    assert auroc == pytest.approx((a + b) / 2)
    assert (lo, hi) == pytest.approx(t_interval([a, b], bounds=(0.0, 1.0))[1:])


def test_question_topics_do_not_count_as_separation():
    """Question 1's answers all score high, question 2's low: pooled, positives would look separated; within each
    question they are not."""
    pos, neg = [0.9, 0.2], [0.95, 0.1]
    assert auroc_ci(pos, neg, [1, 2], [1, 2])[0] == pytest.approx(0.5)


def test_out_of_fold_scores_get_the_interval_of_one_fold():
    """Folds' standard errors are averaged (perfect correlation between folds, the worst case)."""
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.8, 1, 20), rng.normal(0, 1, 20)
    fold_of = {q: q % 2 for q in range(20)}
    auroc, lo, hi = auroc_ci(pos, neg, range(20), range(20), fold_of=fold_of)
    per_question = (pos > neg).astype(float)
    folds = [per_question[0::2], per_question[1::2]]
    se = np.mean([f.std(ddof=1) / math.sqrt(10) for f in folds])
    assert auroc == pytest.approx(per_question.mean())
    assert auroc - lo == pytest.approx(stats.t.ppf(0.975, 9) * se) and hi == 1.0  # clipped to the largest question's


def test_perfect_separation_is_not_certain_with_few_questions():
    auroc, lo, hi = auroc_ci([0.9, 0.8, 0.95, 0.7], [0.1, 0.2, 0.3, 0.05], range(4), range(4))
    assert auroc == 1.0 and hi == 1.0 and lo == pytest.approx(0.05**0.25)
