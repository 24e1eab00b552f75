"""The shipped safety data and the refusal classifiers (phrase matcher, embedding classifier, agreement, rates)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from personactl.safety.data import SPLITS, builtin_path, load_examples
from personactl.safety.refusal import RefusalClassifier, agreement, is_refusal, rate_with_ci


def _records(split):
    return [json.loads(line) for line in builtin_path(split).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_each_set_has_at_least_120_training_examples_a_held_out_split_and_many_categories():
    for kind in ("harmful", "benign"):
        train, heldout = _records(f"{kind}_train"), _records(f"{kind}_heldout")
        assert len(train) >= 120 and len(heldout) >= 40
        assert not {r["instruction"] for r in train} & {r["instruction"] for r in heldout}
        assert len(Counter(r["category"] for r in train)) >= 6
    harmful = Counter(r["category"] for r in _records("harmful_train"))
    assert {"violence", "weapons", "hacking", "fraud", "self-harm", "harassment"} <= set(harmful)
    assert Counter(r["category"] for r in _records("benign_heldout"))["borderline"] >= 10  # over-refusal probes


@pytest.mark.parametrize("split", SPLITS)
def test_every_line_loads(split):
    data = load_examples(split)
    assert len(data.questions) == len(_records(split)) and not data.empty and not data.duplicates


def test_the_phrase_matcher_flags_every_shipped_refusal_and_no_helpful_answer():
    for split in ("harmful_train", "harmful_heldout"):
        assert all(is_refusal(a) for a in load_examples(split).answers)
    for split in ("benign_train", "benign_heldout"):
        assert not any(is_refusal(a) for a in load_examples(split).answers)
    assert is_refusal("I\u2019m sorry, but I can\u2019t do that.")  # curly apostrophes


def test_the_embedding_classifier_agrees_with_the_phrase_matcher_on_held_out_texts():
    classifier = RefusalClassifier.fit(load_examples("harmful_train").answers, load_examples("benign_train").answers)
    texts = load_examples("harmful_heldout").answers + load_examples("benign_heldout").answers
    result = agreement(classifier.keyword(texts), classifier.embedded(texts))
    assert result.agree >= 0.95 and result.kappa is not None and result.kappa >= 0.9
    assert classifier.embedding.heldout_accuracy >= 0.95


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval from its closed form (Wilson 1927)."""
    centre, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(30, 40), (0, 12), (12, 12), (14, 48)])
def test_refusal_rates_have_95_percent_wilson_intervals(k, n):
    """The bounds are the closed form's at 95%, so an interval at 50% (or 80%) cannot pass; none refused is not certain."""
    rate = rate_with_ci([True] * k + [False] * (n - k))
    assert (rate.rate, rate.n) == (k / n, n)
    assert (rate.low, rate.high) == pytest.approx(_wilson(k, n), abs=1e-9)
    assert rate.low < rate.high


def test_rate_with_ci_examples():
    assert str(rate_with_ci([True] * 30 + [False] * 10)) == "75.0% [59.8, 85.8] (n=40)"
    assert rate_with_ci([False] * 12).high == pytest.approx(0.2425, abs=1e-4)  # 0 of 12 allows up to 24%
