import math

import pytest

import torch

from personactl import activations
from personactl.generation import chat_prompt
from personactl.judges.base import weighted_score
from personactl.judges.local import LocalJudge


def test_local_judge_weights_the_models_own_first_token_distribution(tiny):
    judge = LocalJudge(tiny, "Rate {question} / {answer}:")
    table = judge.top_logprobs(["Rate q / a:"])[0]
    text = tiny.chat(chat_prompt("Rate q / a:"))
    batch = activations.make_batch(tiny, [text])
    with torch.no_grad():
        logits = tiny.model(input_ids=batch.input_ids).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    top = probs.topk(20)
    assert sum(math.exp(v) for v in table.values()) == pytest.approx(float(top.values.sum()), rel=1e-4)
    digits = {tiny.tokenizer.decode([i]): float(probs[i]) for i in top.indices.tolist() if tiny.tokenizer.decode([i]).strip().isdigit()}
    mass = sum(digits.values())
    expected = sum(int(d) * p for d, p in digits.items()) / mass if mass >= 0.25 else None
    got = judge.score(["q"], ["a"])[0]
    assert got == weighted_score(table)
    assert (got is None and expected is None) or abs(got - expected) < 1e-4
