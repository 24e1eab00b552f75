"""The OpenAI-compatible judge against a real server: llama-cpp-python's, serving the embedded SmolLM2 on loopback.

SmolLM2's tokenizer writes numbers digit by digit, so a reading of the first
token alone can never exceed 9; the judge must read the number over the tokens
the server returns, and over the digit branches it did not return. The
reference reading goes another way: the completions endpoint, with the prompt
formatted by llama-cpp-python's own chat formatter and each branch's digits
appended.
"""

import math

import gguf
import openai
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from personactl.judges.base import MIN_NUMBER_MASS, digit_score, unread_branches, weighted_score
from personactl.judges.branches import Completion, Tables, path_tables
from personactl.judges.llm import NUMBER_TOKENS, OpenAIJudge
from personactl.models import EMBEDDED_MODELS

QUESTIONS = ["What is 12 + 13? Reply with the number only.", "What is 10 times 10? Answer with just the number."]
TO_ADD = "What is 40 + 45? Reply with the number only."  # greedy "To add", P("4") about 0.2: the example
TWENTY = "What is 20 + 75? Reply with the number only."  # greedy "20 +", P("1") about 0.03: a branch it did not take


def test_the_judge_reads_numbers_over_several_tokens_from_a_real_server(llama_server):
    client = openai.OpenAI(base_url=llama_server, api_key="none")
    judge = OpenAIJudge("smollm2", "{question}", base_url=llama_server, api_key="none")
    scores = judge.score(QUESTIONS, ["", ""])
    for question, score in zip(QUESTIONS, scores):
        completion = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": question}],
            max_tokens=NUMBER_TOKENS,
            temperature=0,
            logprobs=True,
            top_logprobs=20,
            seed=0,
        )
        content = completion.choices[0].logprobs.content
        first_token_only = weighted_score({t.token: t.logprob for t in content[0].top_logprobs})
        assert first_token_only is not None and first_token_only < 10  # what the one-token reading saw
        assert len(content) >= 2 and content[1].token.isdigit()  # the server's answer is a two-digit number
        assert score is not None and score > 10, (question, score)
        assert not math.isnan(score)


def reference_tables(client: openai.OpenAI, question: str) -> Tables:
    """Every table `digit_score` needs, from the completions endpoint: the chat prompt as llama-cpp-python formats
    it, then each plausible branch's digits."""
    template = gguf.GGUFReader(EMBEDDED_MODELS["smollm2-135m"].locate()).fields["tokenizer.chat_template"].contents()
    prompt = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="<|im_start|>")(messages=[{"role": "user", "content": question}]).prompt

    def after(prefix: str) -> Tables:
        choice = client.completions.create(
            model="smollm2", prompt=prompt + prefix, max_tokens=NUMBER_TOKENS - len(prefix), logprobs=20, temperature=0
        ).choices[0]
        read = Completion(list(choice.logprobs.tokens), [dict(t) for t in choice.logprobs.top_logprobs], choice.finish_reason == "stop")
        return path_tables(read, prefix)

    tables = after("")
    while todo := unread_branches(tables):
        for prefix in todo:
            tables = {**after(prefix), **tables}
    return tables


def test_the_judge_reads_the_digit_branches_the_server_did_not_return(llama_server):
    client = openai.OpenAI(base_url=llama_server, api_key="none")
    judge = OpenAIJudge("smollm2", "{question}", base_url=llama_server, api_key="none", concurrency=1)
    to_add, twenty = judge.score([TO_ADD, TWENTY], ["", ""])
    assert judge.follow_ups == {"prefill": False, "grammar": True}  # a prefill starts a new turn here; a grammar is kept

    tables = reference_tables(client, TO_ADD)
    assert {"4", "1"} <= tables.keys() and "To" not in tables  # greedy "To add": both digit branches were read
    one_digit = digit_score({"": tables[""], **{d: {} for d in tables[""]}}, min_mass=0)
    assert one_digit < 10  # the old reading: every branch a one-digit number (3.3 in the issue)
    expected = digit_score(tables, min_mass=0)
    assert expected > 30  # mostly "40"
    # Its numbers carry about 0.27 of the probability, near the 0.25 rule, which the server's batch shapes can move.
    assert to_add is not None or digit_score(tables, min_mass=MIN_NUMBER_MASS + 0.05) is None
    assert to_add is None or to_add == pytest.approx(expected, abs=3)

    tables = reference_tables(client, TWENTY)
    assert "1" in tables and tables[""]["2"] > tables[""]["1"] >= 0.01  # greedy "20", and the branch after "1" was read
    assert twenty == pytest.approx(digit_score(tables), abs=3)
