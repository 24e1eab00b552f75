"""Calibration of conditional steering's criteria (`conditions.conditional_effect`) on simulated judged answers.

Design, as in experiments/conditional_steering.py: 30 held-out on-topic and 30 other questions; the condition fires
on an on-topic question with probability 0.93 and on another question with probability q. Each question has its own
unsteered trait level (sd 15) and, where the condition fires, its own rise (mean mu, sd 8 between questions). Either
greedy (one answer per question: where the condition does not fire the steered answer is the unsteered one, so the
difference is exactly 0) or sampled (3 answers per question, each judged with noise sd 10, steered and unsteered
answers drawn independently). The unit of every interval is the question.
"""

import numpy as np
import pytest

from personactl.conditions import conditional_effect

ON, OFF, RUNS = 30, 30, 400
FIRE_ON = 0.93
CRITERION_FIRED = "no rise where it fired on other questions (their paired CI not above 0)"


def _criterion_below(margin: float = 5.0) -> str:
    return f"the other questions' mean rise is below {margin:g} points (upper 95% bound)"


def _run(rng, *, q: float, rise_off: float, rise_on: float = 12.0, samples: int = 1, off: int = OFF):
    """One simulated run's `ConditionalEffect`."""
    topic = np.r_[np.ones(ON, bool), np.zeros(off, bool)]
    fired = rng.random(ON + off) < np.where(topic, FIRE_ON, q)
    rise = np.where(topic, rise_on, rise_off) + rng.normal(0.0, 8.0, ON + off)
    level = rng.normal(40.0, 15.0, ON + off)
    if samples == 1:
        base = level + rng.normal(0.0, 10.0, ON + off)
        steered = base + np.where(fired, rise, 0.0)
        return conditional_effect(topic, fired, steered.tolist(), base.tolist())
    rows = np.repeat(np.arange(ON + off), samples)
    base = level[rows] + rng.normal(0.0, 10.0, rows.size)
    steered = level[rows] + np.where(fired, rise, 0.0)[rows] + rng.normal(0.0, 10.0, rows.size)
    return conditional_effect(topic[rows], fired[rows], steered.tolist(), base.tolist(), rows.tolist())


@pytest.mark.parametrize("q, samples", [(0.1, 1), (0.3, 1), (0.1, 3), (0.3, 3)])
def test_no_rise_on_other_questions_is_rarely_flagged(q, samples):
    """Null (steering does not raise the trait on other questions where it fires): the check "rises where it fired
    on other questions" (paired CI over those questions above 0) flags at most 7% of 400 runs, greedy or sampled.
    (intervals.t_interval, clipped to the units' range, flagged 10% at q = 0.1: three units that are all positive.)"""
    rng = np.random.default_rng(31)
    flagged = sum(not _run(rng, q=q, rise_off=0.0, samples=samples).criteria()[CRITERION_FIRED] for _ in range(RUNS))
    assert flagged / RUNS <= 0.07, flagged / RUNS


def test_a_rise_on_the_other_questions_where_it_fired_is_caught():
    """A rise of 30 points on the other questions where it fires (q = 0.2, ~6 of 30): flagged in at least 90% of runs,
    and the mean rise over the other questions is never called below 5 points."""
    rng = np.random.default_rng(32)
    effects = [_run(rng, q=0.2, rise_off=30.0) for _ in range(RUNS)]
    assert sum(not e.criteria()[CRITERION_FIRED] for e in effects) / RUNS >= 0.9
    assert not any(e.criteria()[_criterion_below()] for e in effects)


@pytest.mark.parametrize("q, rise_off", [(0.1, 50.0), (0.3, 50 / 3), (0.5, 10.0)])
def test_a_mean_rise_at_the_margin_is_rarely_called_below_it(q, rise_off):
    """The other questions' mean rise (share that fires x rise where it fires) is exactly the 5-point margin: "below
    5 points" is met in at most 7% of 400 runs. (A t bound over all other questions, zeros included, was below the
    truth in 12% at q = 0.1.)"""
    rng = np.random.default_rng(33)
    met = sum(_run(rng, q=q, rise_off=rise_off).criteria()[_criterion_below()] for _ in range(RUNS))
    assert met / RUNS <= 0.07, met / RUNS


def test_a_small_rise_can_be_shown_below_the_margin_with_enough_questions():
    """Power of the bound: 150 other questions, the condition firing on 2% with a 10-point rise (mean 0.2): "below 5
    points" is met in at least 80% of runs. (With 30 other questions it cannot be: none firing still allows 13.6%.)"""
    rng = np.random.default_rng(34)
    met = sum(_run(rng, q=0.02, rise_off=10.0, off=150).criteria()[_criterion_below()] for _ in range(RUNS))
    assert met / RUNS >= 0.8, met / RUNS
    assert _run(rng, q=0.0, rise_off=0.0).rise_off_bound > 5.0


@pytest.mark.parametrize("samples", [1, 3])
def test_paired_rise_intervals_cover_known_rises(samples):
    """Known effects: the on-topic rise's 95% CI covers its truth (0.93 x 12 points: unfired questions are not
    steered) and the CI over the other questions where it fired (q = 0.5) covers their rise (20 points), each in
    93-97% of 1000 runs, greedy or with 3 samples per question."""
    rng = np.random.default_rng(37)
    runs, on, fired = 1000, 0, 0
    for _ in range(runs):
        e = _run(rng, q=0.5, rise_off=20.0, samples=samples)
        on += e.rise_on[1] <= FIRE_ON * 12.0 <= e.rise_on[2]
        fired += e.rise_off_fired[1] <= 20.0 <= e.rise_off_fired[2]
    assert 0.93 <= on / runs <= 0.97 and 0.93 <= fired / runs <= 0.97, (on / runs, fired / runs)
