import math

import pytest
import torch
from conftest import SIMPLE_TEMPLATE, TINY_ARCHS, char_tokenizer, tiny_model

from personactl import activations, from_model
from personactl.generation import chat_prompt
from personactl.judges.base import weighted_score
from personactl.judges.local import LocalJudge, digit_tokens

# The first answer token the judge model is made to give: whole numbers as single tokens, and one word.
FORCED = {"85": 0.5, "90": 0.3, "A": 0.2}


def whole_number_judge(arch: str):
    """A tiny model whose tokenizer has 10-100 as single tokens and whose next-token distribution is FORCED."""
    tokenizer = char_tokenizer(None if arch == "gpt2" else SIMPLE_TEMPLATE)
    tokenizer.add_tokens([str(n) for n in range(10, 101)])
    model = tiny_model(arch)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    logits = torch.full((len(tokenizer),), -1e4)
    for token, p in FORCED.items():
        logits[tokenizer.convert_tokens_to_ids(token)] = math.log(p)
    model.get_output_embeddings().register_forward_hook(lambda _module, _inputs, out: logits.expand_as(out).to(out.dtype))
    return from_model(model, tokenizer, name=f"numbers-{arch}")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_local_judge_weights_the_models_own_first_token_distribution(arch):
    backbone = whole_number_judge(arch)
    assert digit_tokens(backbone.tokenizer) is None  # "85" is one token: Chen et al.'s one-token reading
    judge = LocalJudge(backbone, "Rate {question} / {answer}:")
    table = judge.top_logprobs(["Rate q / a:"])[0]
    text = backbone.chat(chat_prompt("Rate q / a:"))
    with torch.no_grad():
        logits = backbone.model(input_ids=activations.make_batch(backbone, [text]).input_ids).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    assert sum(math.exp(v) for v in table.values()) == pytest.approx(float(probs.topk(20).values.sum()), rel=1e-4)
    assert {t: math.exp(v) for t, v in table.items() if t in FORCED} == pytest.approx(FORCED, rel=1e-4)
    assert judge.score(["q"], ["a"]) == [pytest.approx((0.5 * 85 + 0.3 * 90) / 0.8)] == [weighted_score(table)]
