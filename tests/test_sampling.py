"""Sampled answers: each row draws from its own seed, so samples differ, runs repeat, batches do not matter."""

import json

import pytest
import torch
from conftest import tiny_backbone
from hypothesis import given, settings
from hypothesis import strategies as st
from test_evaluate import LengthJudge

from personactl import PersonaVector, SteeringTerm
from personactl.evaluate import Condition, SweepConfig, run_sweep
from personactl.generation import chat_prompt, generate, record_seed
from personactl.judges.base import Judges
from personactl.judges.text import RepetitionCoherenceJudge
from personactl.methods import MethodContext, VectorMethod
from personactl.traits import load_trait

PROMPTS = [chat_prompt(q) for q in ("Hi there", "What is tea?", "Tell me a joke", "Why is the sky blue?")]
SAMPLING = dict(max_new_tokens=8, temperature=1.0)


@pytest.fixture(scope="module")
def llama():
    return tiny_backbone("llama")


def test_different_seeds_give_different_answers_for_the_same_prompt(llama):
    answers = generate(llama, [PROMPTS[0]] * 4, seeds=[1, 2, 3, 4], **SAMPLING)
    assert len(set(answers)) == 4


def test_the_same_seed_gives_the_same_answer(llama):
    assert generate(llama, PROMPTS, seeds=[7, 8, 9, 10], **SAMPLING) == generate(llama, PROMPTS, seeds=[7, 8, 9, 10], **SAMPLING)


def test_default_seeds_differ_per_row_across_batches(llama):
    """Before: every batch reseeded with seed + first row, so equal prompts in two batches repeated."""
    answers = generate(llama, [PROMPTS[0]] * 4, batch_size=1, **SAMPLING)
    assert len(set(answers)) == 4


@settings(max_examples=6, deadline=None)
@given(batch_size=st.integers(1, 4), order=st.permutations(range(4)))
def test_a_rows_answer_does_not_depend_on_its_batch(llama, batch_size, order):
    seeds = [11, 12, 13, 14]
    alone = [generate(llama, [PROMPTS[i]], seeds=[seeds[i]], **SAMPLING)[0] for i in range(4)]
    mixed = generate(llama, [PROMPTS[i] for i in order], seeds=[seeds[i] for i in order], batch_size=batch_size, **SAMPLING)
    assert mixed == [alone[i] for i in order]


def test_record_seed_is_stable_and_separates_records():
    assert record_seed(0, "q1", "s0") == record_seed(0, "q1", "s0")
    assert len({record_seed(0, f"q{q}", f"s{s}") for q in range(20) for s in range(5)}) == 100
    assert record_seed(0, "q1", "s0") != record_seed(1, "q1", "s0")


def test_conditions_share_dice_per_question_and_sample_only():
    a, b, c = Condition("vector", 3, 0.0, 2, 0), Condition("prompt", 0, 2.0, 2, 0), Condition("vector", 3, 0.0, 2, 1)
    assert a.seed(0) == b.seed(0) != c.seed(0)


def _sweep(tmp_path, name="s"):
    config = SweepConfig(name=name, layers=[1], coefs=[0.0, 1.0], n_questions=3, samples=2, temperature=1.0, max_new_tokens=6, batch_size=5)
    backbone = tiny_backbone("llama")
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size))
    method = VectorMethod(MethodContext(backbone, load_trait("pirate"), vector, config.generation()))
    questions = load_trait("pirate").eval_questions[:3]
    judges = Judges(LengthJudge(), RepetitionCoherenceJudge())
    return run_sweep(config, backbone, [method], [1], questions, judges, tmp_path / name)


def test_sweep_samples_are_independent_draws_and_a_resumed_run_reproduces_them(tmp_path):
    records = _sweep(tmp_path)
    answers = {r["key"]: r["answer"] for r in records}
    pairs = [(answers[k], answers[k.replace("|s0", "|s1")]) for k in answers if k.endswith("|s0")]
    assert len(pairs) == 6
    assert sum(a != b for a, b in pairs) >= 5  # before the fix: 0 of 6 differed

    results = tmp_path / "s" / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:5]) + "\n")  # a run killed after 5 records
    resumed = {r["key"]: r["answer"] for r in _sweep(tmp_path)}
    assert resumed == answers
    keys = [json.loads(line)["key"] for line in results.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_shared_prefill_gives_the_answers_of_separate_runs(tiny, monkeypatch, temperature):
    """A response-position sweep prefills each question once and copies its cache to every coefficient's row."""
    from personactl import generation

    calls = []
    original = generation.shared_prefill
    monkeypatch.setattr(generation, "shared_prefill", lambda *a: calls.append(len(a[1])) or original(*a))
    torch.manual_seed(3)
    vector = PersonaVector(3 * torch.randn(tiny.n_layers + 1, tiny.hidden_size), trait="random")
    questions = ["<user>a long enough question to pass the window", "<user>hi", "<user>another one"]
    coefs = [-2.0, 0.0, 2.0, 5.0]
    rows = [(q, c, 10 * i) for i, q in enumerate(questions) for c in coefs]
    shared = generate(
        tiny,
        [q for q, _, _ in rows],
        steering=[SteeringTerm(vector, 2, [c for _, c, _ in rows], positions="response")],
        max_new_tokens=6,
        temperature=temperature,
        seeds=[s for _, _, s in rows],
        batch_size=64,
    )
    assert calls == [len(rows)]
    for k, coef in enumerate(coefs):
        separate = generate(
            tiny,
            questions,
            steering=[SteeringTerm(vector, 2, coef, positions="response")],
            max_new_tokens=6,
            temperature=temperature,
            seeds=[10 * i for i in range(len(questions))],
        )
        assert [shared[i * len(coefs) + k] for i in range(len(questions))] == separate
    assert len(calls) == 1  # separate runs have no repeated prompt: the ordinary path


def test_row_sampler_draws_from_the_softmax_and_never_a_masked_token():
    from personactl.generation import RowSampler

    probs = torch.tensor([0.2, 0.5, 0.3, 0.0])
    scores = torch.log(probs).expand(4000, -1).clone()
    sampler = RowSampler(range(4000), temperature=1.0, top_p=1.0)
    picked = sampler(torch.zeros(4000, 1, dtype=torch.long), scores).argmax(-1)
    frequencies = torch.bincount(picked, minlength=4).float() / 4000
    torch.testing.assert_close(frequencies, probs, atol=0.03, rtol=0)
    assert frequencies[3] == 0


def test_row_sampler_never_draws_outside_the_top_p_nucleus():
    """probs (0.5, 0.3, 0.15, 0.05) at top_p 0.7: the nucleus is the first two tokens, drawn 5:3."""
    from personactl.generation import RowSampler

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = torch.log(probs).expand(4000, -1).clone()
    picked = RowSampler(range(4000), temperature=1.0, top_p=0.7)(torch.zeros(4000, 1, dtype=torch.long), scores).argmax(-1)
    counts = torch.bincount(picked, minlength=4)
    assert counts[2:].sum() == 0
    assert counts[0] / 4000 == pytest.approx(0.625, abs=0.03)


def test_generation_with_top_p_draws_every_token_from_its_nucleus(llama):
    """Each sampled token of a tiny model is inside the top-p 0.3 nucleus of the logits it was drawn from."""
    from transformers import LogitsProcessor

    class Record(LogitsProcessor):
        def __init__(self):
            self.steps = []

        def __call__(self, input_ids, scores):
            self.steps.append((input_ids.clone(), scores.clone()))
            return scores

    record, top_p = Record(), 0.3
    generate(
        llama, [PROMPTS[0]] * 64, seeds=range(64), max_new_tokens=4, min_new_tokens=4, temperature=1.0, top_p=top_p, observers=[record], batch_size=64
    )
    outside = 0
    for (_, scores), (next_ids, _) in zip(record.steps, record.steps[1:]):
        probs = torch.softmax(scores.float(), dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        before = ordered.cumsum(-1) - ordered  # mass of the more likely tokens: a token is in the nucleus if that is < top_p
        nucleus = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, order, before < top_p)
        outside += int((~nucleus.gather(1, next_ids[:, -1:])).sum())
        assert nucleus.sum(-1).float().mean() < probs.shape[-1] / 2  # the nucleus leaves most tokens out: the test can fail
    assert len(record.steps) == 4 and outside == 0
