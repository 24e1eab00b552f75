"""The OpenAI-compatible judge against a real server: llama-cpp-python's, serving the embedded SmolLM2 on loopback.

SmolLM2's tokenizer writes numbers digit by digit, so a reading of the first
token alone can never exceed 9; the judge must read the number over the tokens
the server returns.
"""

import math

import openai
import pytest

from personactl.judges.base import weighted_score
from personactl.judges.llm import NUMBER_TOKENS, OpenAIJudge

QUESTIONS = ["What is 12 + 13? Reply with the number only.", "What is 10 times 10? Answer with just the number."]


def test_the_judge_reads_numbers_over_several_tokens_from_a_real_server(llama_server):
    client = openai.OpenAI(base_url=llama_server, api_key="none")
    judge = OpenAIJudge("smollm2", "{question}", base_url=llama_server, api_key="none")
    scores = judge.score(QUESTIONS, ["", ""])
    for question, score in zip(QUESTIONS, scores):
        completion = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=NUMBER_TOKENS, temperature=0,
            logprobs=True, top_logprobs=20, seed=0,
        )
        content = completion.choices[0].logprobs.content
        first_token_only = weighted_score({t.token: t.logprob for t in content[0].top_logprobs})
        assert first_token_only is not None and first_token_only < 10  # what the one-token reading saw
        assert len(content) >= 2 and content[1].token.isdigit()  # the server's answer is a two-digit number
        assert score is not None and score > 10, (question, score)
        assert not math.isnan(score)
