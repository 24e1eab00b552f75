"""The real effect on the embedded SmolLM2-135M-Instruct (real weights, CPU)."""

import re

import pytest

from personactl import SteeringTerm, chat_prompt, generate, project

pytestmark = pytest.mark.slow
PIRATE = re.compile(r"\b(arr+|aye|ye|matey|ahoy|me hearty|sea|ship|treasure|captain|sail\w*)\b", re.I)


def test_pirate_answers_differ_as_instructed(pirate):
    _, _, pairs = pirate
    pos_hits = sum(len(PIRATE.findall(p.pos_answer)) for p in pairs)
    neg_hits = sum(len(PIRATE.findall(p.neg_answer)) for p in pairs)
    assert pos_hits > 3 * max(neg_hits, 1)


def test_monitor_predicts_the_trait_from_the_prompt(smollm2, pirate):
    trait, vector, _ = pirate
    questions = trait.eval_questions[:6]
    layer = 10
    pos = project(smollm2, vector, [chat_prompt(q, trait.instructions[0].pos) for q in questions], layers=[layer])
    neg = project(smollm2, vector, [chat_prompt(q, trait.instructions[0].neg) for q in questions], layers=[layer])
    assert (pos > neg).all()


def test_steering_raises_pirate_speech_and_projection(smollm2, pirate):
    trait, vector, _ = pirate
    questions, coefs, layer = trait.eval_questions[:6], [0.0, 4.0], 9
    prompts = [chat_prompt(q) for q in questions for _ in coefs]
    answers = generate(smollm2, prompts, steering=[SteeringTerm(vector, layer, coefs * len(questions))], max_new_tokens=40, batch_size=len(prompts))
    base, steered = answers[0::2], answers[1::2]
    assert sum(len(PIRATE.findall(a)) for a in steered) >= sum(len(PIRATE.findall(a)) for a in base) + 5
    # the steered answers, read back without steering, lie further along the direction
    plain = [chat_prompt(q) for q in questions]
    proj_base = project(smollm2, vector, plain, base, layers=[layer])
    proj_steered = project(smollm2, vector, plain, steered, layers=[layer])
    assert float(proj_steered.mean() - proj_base.mean()) > 0.5 * float(proj_base.std())
    # a negative coefficient moves the other way
    negative = generate(smollm2, plain, steering=[SteeringTerm(vector, layer, -4.0)], max_new_tokens=40, batch_size=6)
    assert float(project(smollm2, vector, plain, negative, layers=[layer]).mean()) < float(proj_base.mean())
