import torch

from personactl import ExtractionSettings, activations, extract, load_pairs, project, save_pairs
from personactl.traits import parse_trait


def _trait():
    return parse_trait(
        {
            "name": "shouty",
            "instructions": [{"pos": f"SHOUT {i}", "neg": f"whisper {i}"} for i in range(5)],
            "questions": [f"question {i}?" for i in range(20)],
            "eval_questions": [f"held out {i}?" for i in range(10)],
            "rubric": "{question} {answer}",
        }
    )


def test_extract_generates_pairs_and_a_vector_per_layer(tiny, tmp_path):
    vector, pairs = extract(tiny, _trait(), ExtractionSettings(max_new_tokens=3, n_questions=2, batch_size=4))
    assert len(pairs) == 5 * 2
    assert vector.directions.shape == (tiny.n_layers + 1, tiny.hidden_size)
    usable = [p for p in pairs if p.pos_answer.strip() and p.neg_answer.strip()]  # empty answers are dropped
    assert vector.n_samples == len(usable) and len(vector.separation) == tiny.n_layers + 1
    assert vector.extra["settings"]["n_questions"] == 2
    assert load_pairs(save_pairs(pairs, tmp_path / "p.jsonl")) == pairs


def test_contrastive_texts_give_the_mean_difference(tiny):
    trait = parse_trait({"name": "t", "positive_texts": ["arr matey", "yo ho"], "negative_texts": ["good day", "hello"]})
    vector, pairs = extract(tiny, trait)
    acts = activations.collect(tiny, ["", "", "", ""], ["arr matey", "yo ho", "good day", "hello"])
    torch.testing.assert_close(vector.directions, acts[:2].mean(0) - acts[2:].mean(0), rtol=1e-5, atol=1e-5)


def test_projection_matches_manual_dot_product(tiny):
    vector, _ = extract(tiny, parse_trait({"name": "t", "positive_texts": ["aaa"], "negative_texts": ["zzz"]}))
    scores = project(tiny, vector, ["abc", "xyz"], layers=[1, 3])
    acts = activations.collect(tiny, ["abc", "xyz"], positions="prompt_last")
    expected = torch.stack([acts[:, l] @ vector.unit(l) for l in (1, 3)], dim=1)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


class _KeywordJudge:
    name = "keyword"

    def __init__(self, word, hit=90.0, miss=10.0):
        self.word, self.hit, self.miss = word, hit, miss

    def score(self, questions, answers):
        return [self.hit if self.word in a else self.miss for a in answers]


def _pair(i, pos, neg):
    from personactl import ContrastivePair

    return ContrastivePair(i, "q", "", pos, "", neg)


def test_filter_keeps_only_pairs_that_express_the_trait_coherently():
    from personactl.extraction import filter_pairs
    from personactl.judges.base import Judges

    pairs = [_pair(0, "arr matey", "hello"), _pair(0, "hello", "hello"), _pair(1, "arr arr", "arr"), _pair(1, "arr !!", "fine")]
    judges = Judges(_KeywordJudge("arr"), _KeywordJudge("!!", hit=0.0, miss=100.0))
    kept, report, scores = filter_pairs(pairs, judges)
    assert kept == [pairs[0]]
    assert report.kept == {0: 1} and report.total == {0: 2, 1: 2}
    assert report.describe() == "instruction 0: 1/2, instruction 1: 0/2"
    assert scores.passing == [True, False, False, False] and scores.pos[0] == 90.0 and scores.neg[0] == 10.0


def test_filter_that_keeps_nothing_is_a_clear_error():
    import pytest

    from personactl import TraitError
    from personactl.extraction import filter_pairs
    from personactl.judges.base import Judges

    with pytest.raises(TraitError, match="no pair passed"):
        filter_pairs([_pair(0, "hello", "hello")], Judges(_KeywordJudge("arr"), _KeywordJudge("x", 100.0, 100.0)))
