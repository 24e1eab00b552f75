"""The server on the embedded SmolLM2 with a real pirate vector: the persona's real effect through the openai client."""

from __future__ import annotations

import pytest
from openai import OpenAI

from personactl import chat_prompt, project
from personactl.server import ServerSettings, running_server

pytestmark = pytest.mark.slow
QUESTIONS = ["How should I spend a rainy Sunday?", "What is a good breakfast?", "How do I learn to cook?", "Tell me about your day."]


@pytest.fixture(scope="module")
def client(smollm2, pirate, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors")
    pirate[1].save(folder / "pirate.safetensors")
    with running_server(smollm2, ServerSettings(port=0, vectors=folder)) as served:
        yield OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def _answer(client, question: str, coef: float | None) -> str:
    extra = None if coef is None else {"persona": {"vectors": [{"name": "pirate", "coef": coef, "layers": [9]}]}}
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=32, temperature=0, extra_body=extra
    )
    return reply.choices[0].message.content


def test_the_pirate_persona_steers_smollm2_through_the_api(client, smollm2, pirate):
    plain = [_answer(client, q, None) for q in QUESTIONS]
    assert [_answer(client, q, 0.0) for q in QUESTIONS] == plain
    steered = [_answer(client, q, 4.0) for q in QUESTIONS]
    prompts = [chat_prompt(q) for q in QUESTIONS]
    before = project(smollm2, pirate[1], prompts, plain, layers=[9])[:, 0]
    after = project(smollm2, pirate[1], prompts, steered, layers=[9])[:, 0]
    assert int((after > before).sum()) >= 3 and float((after - before).mean()) > 1.0, (before, after, steered)


def test_served_logprobs_are_the_models_own(client, smollm2):
    import torch

    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
    served = reply.choices[0].logprobs.content[0].top_logprobs
    ids = torch.tensor([smollm2.encode([smollm2.chat(messages)])[0]])
    with torch.no_grad():
        own = torch.log_softmax(smollm2.model(input_ids=ids).logits[0, -1].float(), dim=-1).topk(5)
    assert [t.token for t in served] == [smollm2.tokenizer.decode([i]) for i in own.indices.tolist()]
    assert all(abs(t.logprob - v) < 1e-4 for t, v in zip(served, own.values.tolist()))
