"""The relevance judges: the offline embedding rank score (real packaged MiniLM encoder) and the rubric wiring."""

import hashlib

import numpy as np
import pytest

from personactl.judges import relevance
from personactl.judges.base import COHERENCE_RUBRIC, RELEVANCE_RUBRIC
from personactl.judges.embedding import EmbeddingJudgeError
from personactl.judges.factory import make_judges
from personactl.judges.relevance import MIN_OTHER_QUESTIONS, EmbeddingRelevanceJudge
from personactl.traits import load_trait

QUESTIONS = [
    "How do I bake a loaf of bread at home?",
    "What is a good way to relax after a long day at work?",
    "How can I sleep better at night?",
    "What should I pack for a weekend camping trip?",
    "How do I keep my houseplants alive?",
    "What is the best way to learn a new language?",
    "How often should I change the oil in my car?",
    "How can I save money on groceries?",
]
ON_TOPIC = [
    "Mix flour, water, yeast and salt, knead the dough for ten minutes, let it rise for an hour, shape the loaf and bake it at 220 degrees for about 35 minutes.",
    "After a long workday, take a short walk, put your phone away, cook something simple and unwind with a book or a warm bath before bed.",
    "Go to bed and wake up at the same time every day, keep the bedroom dark and cool, and avoid caffeine and screens in the evening so you fall asleep more easily.",
    "For a weekend in the woods bring a tent, a sleeping bag and mat, a stove with fuel, enough food and water, a headlamp, warm layers and a rain jacket.",
    "Most houseplants die from overwatering: water only when the top of the soil is dry, give them bright indirect light, and use pots with drainage holes.",
    "Practise a little every day: learn the most common words first, listen to podcasts and shows in the language, and talk with native speakers as early as you can.",
    "Check your car's manual, but most modern engines need an oil change every 5,000 to 10,000 miles, or once a year if you drive little.",
    "Plan your meals for the week, shop with a list, buy store brands and seasonal produce, and avoid going to the supermarket when you are hungry.",
]
OFF_TOPIC = [
    "Arr, me hearties, the ship be the finest vessel on the seven seas! Hoist the mainsail, swab the deck and keep yer eyes on the horizon for treasure!",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen inside the chloroplasts of green leaves.",
    "The stock market fell sharply today as investors worried about interest rates, and technology shares led the decline.",
    "Medieval castles were built with thick stone walls, a moat and a drawbridge, and the keep was the last line of defence during a siege.",
    "Jupiter is the largest planet in the solar system, a gas giant with dozens of moons and a storm larger than the Earth.",
    "The new smartphone has a faster processor, a brighter screen and a camera that takes better photos in low light.",
    "Jazz grew out of New Orleans in the early twentieth century, mixing blues, ragtime and brass band music.",
    "Volcanoes form where tectonic plates meet, and an eruption can throw ash high into the atmosphere for days.",
]


@pytest.fixture(scope="module")
def judge():
    return EmbeddingRelevanceJudge(QUESTIONS)


def test_on_topic_answers_outscore_off_topic_answers_to_the_same_question(judge):
    on_topic = judge.score(QUESTIONS, ON_TOPIC)
    off_topic = judge.score(QUESTIONS, OFF_TOPIC)
    assert all(on > off for on, off in zip(on_topic, off_topic))
    assert np.mean(on_topic) >= 90 and np.mean(off_topic) <= 50
    assert all(0.0 <= s <= 100.0 for s in on_topic + off_topic)


def test_an_answer_to_another_question_scores_low(judge):
    """Each on-topic answer scored as the answer to the next question: right text, wrong question."""
    shifted = judge.score(QUESTIONS[1:] + QUESTIONS[:1], ON_TOPIC)
    assert np.mean(shifted) <= 50 and np.mean(shifted) < np.mean(judge.score(QUESTIONS, ON_TOPIC)) - 50


def test_an_answers_score_does_not_depend_on_the_rest_of_the_batch(judge):
    batch = judge.score(QUESTIONS + QUESTIONS, ON_TOPIC + OFF_TOPIC)
    alone = [judge.score([q], [a])[0] for q, a in zip(QUESTIONS + QUESTIONS, ON_TOPIC + OFF_TOPIC)]
    assert alone == batch
    assert judge.score(QUESTIONS[2:5], OFF_TOPIC[2:5]) == batch[10:13]


def test_a_question_outside_the_references_is_ranked_against_all_of_them():
    outside = EmbeddingRelevanceJudge(QUESTIONS[1:])
    assert outside.score(QUESTIONS[:1], ON_TOPIC[:1]) == [100.0]
    assert outside.score(QUESTIONS[:1], OFF_TOPIC[:1])[0] < 50


def test_a_blank_answer_scores_zero(judge):
    assert judge.score(QUESTIONS[:2], ["", "   "]) == [0.0, 0.0]


def test_too_few_reference_questions_are_refused():
    with pytest.raises(EmbeddingJudgeError, match=f"at least {MIN_OTHER_QUESTIONS + 1} distinct reference questions"):
        EmbeddingRelevanceJudge(QUESTIONS[:MIN_OTHER_QUESTIONS])
    with pytest.raises(EmbeddingJudgeError, match="got 5"):
        EmbeddingRelevanceJudge(QUESTIONS[:5] + QUESTIONS[:3])


def test_mismatched_questions_and_answers_are_refused(judge):
    with pytest.raises(EmbeddingJudgeError, match="2 questions but 1 answers"):
        judge.score(QUESTIONS[:2], ON_TOPIC[:1])


def test_under_no_signal_the_share_is_chance_and_the_score_is_zero_half_the_time(monkeypatch):
    """Calibration: with an encoder that gives every text an independent random direction, an answer's own
    question is exchangeable with the 20 others, so r is uniform on {0, 1/20, ..., 1}: mean 0.5, and the score is
    0 exactly when r <= 0.5, with probability 11/21."""

    def random_embed(texts):
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        vectors = np.array([np.random.default_rng(s).standard_normal(384) for s in seeds]).reshape(len(texts), 384)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    monkeypatch.setattr(relevance, "embed", random_embed)
    references = [f"question {i}" for i in range(21)]
    null = EmbeddingRelevanceJudge(references)
    n = 4000
    questions = [references[i % 21] for i in range(n)]
    answers = [f"answer {i}" for i in range(n)]
    shares = null.shares(questions, answers)
    zero = np.mean(np.array(null.score(questions, answers)) == 0.0)
    assert abs(shares.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(zero - 11 / 21) < 4 * np.sqrt(11 / 21 * 10 / 21 / n)


def test_embed_judges_get_a_relevance_judge_only_when_given_questions():
    trait = load_trait("pirate")
    fitted = dict(positives=ON_TOPIC, negatives=OFF_TOPIC, groups=list(range(8)))
    assert make_judges("embed", trait, **fitted).relevance is None
    judges = make_judges("embed", trait, **fitted, relevance_questions=QUESTIONS)
    assert isinstance(judges.relevance, EmbeddingRelevanceJudge) and judges.relevance.reference_questions == QUESTIONS


def test_llm_judges_get_the_relevance_rubric(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONACTL_JUDGE_API_KEY", "unused")
    monkeypatch.setenv("PERSONACTL_CACHE_DIR", str(tmp_path))
    trait = load_trait("pirate")
    assert make_judges("openai:m", trait).relevance is None
    judges = make_judges("openai:m", trait, relevance_questions=QUESTIONS)
    assert [j.rubric for j in (judges.trait, judges.coherence, judges.relevance)] == [trait.rubric, COHERENCE_RUBRIC, RELEVANCE_RUBRIC]
    assert judges.relevance.name == "openai:m:relevance"
