import math

import pytest
import torch

from personactl import activations
from personactl.judges.text import RepetitionCoherenceJudge, distinct_n, is_collapsed, perplexity, text_metrics


def test_repetition_and_collapse():
    assert is_collapsed("aye, aye, aye, aye, aye, aye, aye, aye")
    assert is_collapsed("ok")
    assert not is_collapsed("Baking bread at home takes flour, water, salt and some patience.")
    assert distinct_n("a b c a b c", 3) == pytest.approx(3 / 4)
    metrics = text_metrics("the cat sat on the mat")
    assert metrics.n_words == 6 and metrics.distinct_2 == 1.0 and not metrics.collapsed


def test_offline_coherence_orders_fluent_above_repetitive():
    judge = RepetitionCoherenceJudge()
    fluent, loopy, dead = judge.score(
        ["q"] * 3,
        [
            "Take a warm bath, read a good book and go to bed early.",
            "the good, the good, the good, the good, the good, the bad",
            "aye aye aye aye aye aye aye aye aye",
        ],
    )
    assert fluent == 100.0 and dead == 0.0 and 0.0 <= loopy < fluent


def test_perplexity_matches_a_manual_computation(tiny):
    prompts, answers = ["<user>hello", "<user>a longer prompt here"], ["abc", "de"]
    got = perplexity(tiny, prompts, answers, batch_size=2)
    for p, a, value in zip(prompts, answers, got):
        batch = activations.make_batch(tiny, [p], [a])
        with torch.no_grad():
            logits = tiny.model(input_ids=batch.input_ids).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, batch.input_ids[0, 1:, None])[:, 0]
        expected = math.exp(-float(lp[-len(a) :].mean()))
        assert value == pytest.approx(expected, rel=1e-4)


def test_perplexity_of_rows_sharing_a_prompt_equals_one_forward_per_row(tiny):
    """Rows that repeat a prompt run it once and copy its cache: the numbers must not change (sliding windows included)."""
    long_prompt = "<user>a prompt longer than the sliding window"
    prompts = [long_prompt, "<user>hi", long_prompt, long_prompt, "<user>hi"]
    answers = ["abc def", "x", "a much longer answer here", "", "yz"]
    shared = perplexity(tiny, prompts, answers, batch_size=8)
    one_by_one = [perplexity(tiny, [p], [a])[0] for p, a in zip(prompts, answers)]
    assert shared[3] is None and one_by_one[3] is None
    for got, expected in zip(shared, one_by_one):
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-4)
