"""The bench's leaderboard: combined scores, rows, paired comparisons, verdict wording, and their calibration.

Simulated benches have the real structure: 10-20 held-out questions, 1-4 samples per question, a question effect
(sd 12 per score) shared by every method (the same questions with the same seeds), a method-by-question effect
(sd 5: a method helps on some questions more than on others), answer noise (sd 10), scores clipped to 0-100 and 3%
of coherence scores missing. The true combined score (a harmonic mean of clipped scores) comes from a large
simulation of the same model.
"""

import math

import numpy as np
import pytest
from scipy.stats import ttest_1samp

from personactl.bench.leaderboard import (
    Comparison,
    MethodRow,
    combined_score,
    holm,
    method_rows,
    overall_rows,
    paired_comparisons,
    stratified_mean_ci,
    verdict_lines,
)
from personactl.errors import BenchError
from personactl.intervals import t_interval

BASE = np.array([50.0, 75.0, 80.0])  # trait, coherence, relevance
QUESTION_SD, INTERACTION_SD, NOISE_SD = 12.0, 5.0, 10.0
MISSING = 0.03
RUNS = 400


def simulate(rng, shifts, trait="pirate", base=BASE):
    """Records of one trait's bench; `shifts` maps each method to the rise of its mean trait score (before clipping)."""
    n_questions = int(rng.integers(10, 21))
    samples = rng.integers(1, 5, n_questions)
    question = rng.normal(0, QUESTION_SD, (n_questions, 3))
    records = []
    for method, shift in shifts.items():
        centre = base + np.array([shift, 0.0, 0.0]) + question + rng.normal(0, INTERACTION_SD, (n_questions, 3))
        for q in range(n_questions):
            scores = np.clip(centre[q] + rng.normal(0, NOISE_SD, (samples[q], 3)), 0, 100)
            missing = rng.random(samples[q]) < MISSING
            records += [
                {
                    "trait": trait,
                    "method": method,
                    "question_id": q,
                    "sample": s,
                    "trait_score": float(scores[s, 0]),
                    "coherence": None if missing[s] else float(scores[s, 1]),
                    "relevance": float(scores[s, 2]),
                }
                for s in range(samples[q])
            ]
    return records


def true_combined(shift=0.0, base=BASE):
    """The population mean of the combined score of a method whose trait score rises by `shift`."""
    rng = np.random.default_rng(12345)
    sd = math.sqrt(QUESTION_SD**2 + INTERACTION_SD**2 + NOISE_SD**2)
    scores = np.clip(base + np.array([shift, 0.0, 0.0]) + rng.normal(0, sd, (1_000_000, 3)), 0, 100)
    with np.errstate(divide="ignore"):
        return float(np.mean(3 / (1 / scores).sum(axis=1)))


def record(method, question, sample, trait_score, coherence=80.0, relevance=80.0, trait="pirate"):
    return {
        "trait": trait,
        "method": method,
        "question_id": question,
        "sample": sample,
        "trait_score": trait_score,
        "coherence": coherence,
        "relevance": relevance,
    }


# combined score


def test_combined_score_is_the_harmonic_mean_of_the_three_scores():
    assert combined_score(50, 50, 50) == pytest.approx(50)
    assert combined_score(20, 40, 80) == pytest.approx(3 / (1 / 20 + 1 / 40 + 1 / 80))
    assert combined_score(100, 100, 100) == pytest.approx(100)


def test_combined_score_is_zero_when_any_score_is_zero_and_none_when_any_is_missing():
    assert combined_score(0, 90, 90) == 0
    assert combined_score(90, 90, 0.0) == 0
    assert combined_score(None, 90, 90) is None
    assert combined_score(90, None, 0) is None


# rows and the overall leaderboard


def test_method_rows_average_each_question_first_and_rank_by_combined_score():
    records = [record("prompt", 0, s, 90) for s in range(3)] + [record("prompt", 1, 0, 30)]
    records += [record("vector", q, 0, 70) for q in range(2)]
    prompt, vector = (next(r for r in method_rows(records) if r.method == m) for m in ("prompt", "vector"))
    assert (prompt.questions, prompt.answers) == (2, 4)
    assert prompt.trait_score[0] == pytest.approx(60)  # (90 + 30) / 2, not (3 * 90 + 30) / 4
    assert prompt.combined[0] == pytest.approx((combined_score(90, 80, 80) + combined_score(30, 80, 80)) / 2)
    assert [r.method for r in method_rows(records)] == ["vector", "prompt"]
    assert vector.coherence[0] == 80


def test_the_overall_mean_weights_every_trait_equally_and_one_trait_keeps_its_own_interval():
    rng = np.random.default_rng(1)
    many = [record("prompt", q, 0, float(x), 100, 100, "pirate") for q, x in enumerate(rng.normal(80, 5, 12))]
    few = [record("prompt", q, 0, float(x), 100, 100, "sycophant") for q, x in enumerate(rng.normal(20, 5, 3))]
    rows = method_rows(many + few)
    (overall,) = overall_rows(rows)
    assert overall.traits == ("pirate", "sycophant")
    assert overall.combined[0] == pytest.approx((rows[0].combined[0] + rows[1].combined[0]) / 2)
    pirate = [r.per_question[q] for r in rows if r.trait == "pirate" for q in r.per_question]
    assert stratified_mean_ci([pirate]) == pytest.approx(t_interval(pirate))


def test_the_overall_interval_covers_the_mean_over_traits_95_percent_of_the_time():
    """Three traits at different levels (their question counts differ): the stratified interval covers the mean of the
    traits' true combined means in 91-98% of benches."""
    rng = np.random.default_rng(2)
    levels = {"pirate": BASE, "sycophant": BASE - [20, 0, 0], "evil": BASE + [25, -10, 0]}
    truth = np.mean([true_combined(base=base) for base in levels.values()])
    covered = 0
    for _ in range(RUNS):
        records = [r for trait, base in levels.items() for r in simulate(rng, {"prompt": 0.0}, trait, base)]
        (overall,) = overall_rows(method_rows(records))
        covered += overall.combined[1] <= truth <= overall.combined[2]
    print(f"overall coverage {covered / RUNS:.3f}")
    assert 0.91 <= covered / RUNS <= 0.98


# paired comparisons


def test_holm_adjusts_step_down_and_keeps_a_missing_p_missing_but_in_the_family():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.01, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(1.0)


def test_pairs_read_higher_minus_lower_with_the_baseline_always_second():
    rng = np.random.default_rng(3)
    comparisons = paired_comparisons(simulate(rng, {"none": 30.0, "prompt": 0.0, "vector": 15.0}))
    assert {(c.a, c.b) for c in comparisons} == {("vector", "prompt"), ("prompt", "none"), ("vector", "none")}
    assert {c.trait for c in comparisons} == {"pirate"}


def test_a_pair_with_too_few_shared_questions_is_never_supported():
    records = [record("prompt", q, 0, 90) for q in range(5)] + [record("none", q, 0, 10) for q in range(3, 5)]
    (comparison,) = paired_comparisons(records)
    assert comparison.questions == 2 and math.isnan(comparison.p) and not comparison.supported


# verdict wording


def row(method, combined, trait="pirate"):
    return MethodRow(trait, method, 12, 30, combined, combined, combined, combined)


def test_an_unsupported_lead_is_said_to_be_unsupported():
    rows = [row("prompt", (61.0, 55.0, 67.0)), row("vector", (57.0, 50.0, 64.0))]
    lead = Comparison("pirate", "combined", "prompt", "vector", 12, 4.0, -2.0, 10.0, 0.155, 0.31)
    assert verdict_lines(rows, [lead]) == [
        "prompt leads pirate (combined 61 [55, 67]); its lead over vector (+4 [-2, +10]) is not supported by the data (Holm p = 0.31)"
    ]


def test_a_supported_lead_and_the_baseline_line():
    rows = [row("prompt", (80.0, 75.0, 85.0)), row("vector", (60.0, 55.0, 65.0)), row("none", (58.0, 52.0, 64.0))]
    comparisons = [
        Comparison("pirate", "combined", "prompt", "vector", 12, 20.0, 14.0, 26.0, 0.0001, 0.0003),
        Comparison("pirate", "combined", "prompt", "none", 12, 22.0, 15.0, 29.0, 0.0001, 0.0003),
        Comparison("pirate", "combined", "vector", "none", 12, 2.0, -3.0, 7.0, 0.4, 0.4),
    ]
    assert verdict_lines(rows, comparisons) == [
        "prompt leads pirate (combined 80 [75, 85]); its lead over vector (+20 [+14, +26]) is supported by the data (Holm p = 0.0003)",
        "on pirate, the data show prompt above the baseline none; not shown: vector",
    ]


def test_a_lead_over_the_baseline_reads_from_the_leaders_side():
    rows = [row("none", (70.0, 65.0, 75.0)), row("capping", (60.0, 55.0, 65.0))]
    comparison = Comparison("pirate", "combined", "capping", "none", 12, -10.0, -15.0, -5.0, 0.001, 0.001)
    assert verdict_lines(rows, [comparison]) == [
        "none leads pirate (combined 70 [65, 75]); its lead over capping (+10 [+5, +15]) is supported by the data (Holm p = 0.001)",
        "on pirate, the data show capping below the baseline none",
    ]


def test_too_few_questions_to_compare():
    records = [record("prompt", q, 0, 90) for q in range(2)] + [record("vector", q, 0, 50) for q in range(2)]
    (line,) = verdict_lines(method_rows(records), paired_comparisons(records))
    assert line.startswith("prompt leads pirate (combined ") and line.endswith("too few questions to compare it with vector (2 answered by both)")


# bad input


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"trait": "pirate", "method": "prompt", "question_id": 0, "sample": 0, "trait_score": 50}], "lacks coherence, relevance"),
        ([record("prompt", 0, 0, 120.0)], "trait_score 120.0 outside 0-100"),
        ([record("prompt", 0, 0, 50.0), record("prompt", 0, 0, 60.0)], "answer recorded twice"),
    ],
)
def test_bad_records_are_one_line_errors(records, message):
    with pytest.raises(BenchError, match=message):
        method_rows(records)


def test_an_unknown_metric_is_a_one_line_error():
    with pytest.raises(BenchError, match="unknown metric 'fluency'"):
        paired_comparisons([record("prompt", 0, 0, 50.0)], metric="fluency")


# calibration


def test_identical_methods_are_supported_as_different_in_at_most_5_percent_of_benches():
    """Four methods with one distribution (six pairs in the family): the share of benches where Holm supports any pair
    (family-wise false positives) stays near or below 5%, and each pair's 95% interval covers 0 about 95% of the time."""
    rng = np.random.default_rng(4)
    any_supported, covered, pairs = 0, 0, 0
    for _ in range(RUNS):
        comparisons = paired_comparisons(simulate(rng, dict.fromkeys(("none", "prompt", "vector", "fewshot"), 0.0)))
        any_supported += any(c.supported for c in comparisons)
        covered += sum(c.lo <= 0 <= c.hi for c in comparisons)
        pairs += len(comparisons)
    print(f"family-wise false positives {any_supported / RUNS:.3f}, coverage of 0 {covered / pairs:.3f}")
    assert any_supported / RUNS <= 0.08
    assert 0.93 <= covered / pairs <= 0.97


def test_a_known_difference_is_covered_95_percent_of_the_time_and_a_large_one_is_found():
    """prompt's trait score is 10 higher than none's (a combined difference of `truth`): the paired interval covers it in
    91-98% of benches (400 runs: 2 standard errors are 2.2 points); a 25-point rise is supported in over 90%."""
    rng = np.random.default_rng(5)
    truth = true_combined(10.0) - true_combined()
    covered, found = 0, 0
    for _ in range(RUNS):
        known = next(c for c in paired_comparisons(simulate(rng, {"none": 0.0, "prompt": 10.0, "vector": 0.0})) if (c.a, c.b) == ("prompt", "none"))
        covered += known.lo <= truth <= known.hi
        large = next(c for c in paired_comparisons(simulate(rng, {"none": 0.0, "prompt": 25.0, "vector": 0.0})) if c.b == "none" and c.a == "prompt")
        found += large.supported and large.diff > 0
    print(f"true combined difference {truth:.2f}, coverage {covered / RUNS:.3f}, power at a 25-point rise {found / RUNS:.3f}")
    assert 0.91 <= covered / RUNS <= 0.98
    assert found / RUNS >= 0.9


def test_answers_taken_as_independent_would_find_differences_that_are_not_there():
    """Why answers are averaged per question first: with 4 samples per question and a method-by-question effect larger
    than the answer noise, a paired t-test over answers rejects a true null far more often than 5%; the same test over
    per-question means does not (2000 simulated pairs of methods, 15 questions)."""
    rng = np.random.default_rng(6)
    runs, questions, samples = 2000, 15, 4
    per_question = rng.normal(0, 10, (runs, questions, 1)) * math.sqrt(2)  # a - b of the method-by-question effects
    differences = per_question + rng.normal(0, 5, (runs, questions, samples)) * math.sqrt(2)
    by_answer = ttest_1samp(differences.reshape(runs, -1), 0.0, axis=1).pvalue
    by_question = ttest_1samp(differences.mean(axis=2), 0.0, axis=1).pvalue
    print(f"false positives: answers as units {np.mean(by_answer < 0.05):.3f}, questions as units {np.mean(by_question < 0.05):.3f}")
    assert np.mean(by_answer < 0.05) > 0.2
    assert np.mean(by_question < 0.05) <= 0.07
