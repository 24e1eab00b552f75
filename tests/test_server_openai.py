"""The OpenAI surface clients rely on (issue 24, section 3), through the official openai client and langchain-openai,
against a running server on tiny models: stop, n, usage in streams, message shapes and roles, explicit nulls, the
seed, text that cannot be encoded, logprob bytes and text offsets, an empty completions prompt."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import SIMPLE_TEMPLATE, char_tokenizer, tiny_backbone, tiny_model
from openai import BadRequestError, OpenAI

from personactl import from_model
from personactl.server import ServerSettings, running_server
from personactl.server.openai_requests import Message

HELLO = [{"role": "user", "content": "hello there"}]
PROMPT = "<user>hi</s><assistant>"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<system>", "<user>", "<assistant>"]
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
    "<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def byte_level_backbone():
    """A tiny llama behind a byte-level BPE tokenizer whose token 7 + b is the single byte b (no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)} | {table[b]: len(SPECIALS) + b for b in range(256)}
    core = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", additional_special_tokens=SPECIALS[4:]
    )
    tokenizer.chat_template = SIMPLE_TEMPLATE
    model = tiny_model("llama")
    model.resize_token_embeddings(len(vocab))
    return from_model(model, tokenizer, name="tiny-bytes")


@pytest.fixture(scope="module")
def served():
    with running_server(tiny_backbone("llama"), ServerSettings(port=0, max_tokens=64, batch_window_s=0.01)) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def submitted(served, monkeypatch):
    """The jobs the routes hand to the engine, in order."""
    jobs, submit = [], served.engine.submit
    monkeypatch.setattr(served.engine, "submit", lambda job: (jobs.append(job), submit(job)))
    return jobs


def _post(served, path: str, body: dict) -> httpx.Response:
    """A raw request: JSON written by json.dumps, so lone surrogates travel as \\ud800 escapes."""
    return httpx.post(f"{served.url}/v1/{path}", content=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)


def _answer(client, **kw) -> str:
    kw = {"model": "personactl", "messages": HELLO, "max_tokens": 12, "temperature": 0, **kw}
    return client.chat.completions.create(**kw).choices[0].message.content


# stop


def test_stop_reaches_the_engine_as_job_stop(client, submitted):
    client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=4, stop=["ab", "c"])
    client.completions.create(model="personactl", prompt=PROMPT, max_tokens=4, stop="xy")
    assert [job.stop for job in submitted] == [("ab", "c"), ("xy",)]
    with pytest.raises(BadRequestError, match="stop"):
        client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=4, stop=["a", "b", "c", "d", "e"])
    with pytest.raises(BadRequestError, match="stop"):
        client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=4, stop="")


def test_stop_ends_the_answer_before_the_stop_string(served, client):
    """Needs the engine to honour Job.stop."""
    from langchain_openai import ChatOpenAI
    from langchain_openai import OpenAI as LangChainOpenAI

    full = _answer(client, max_tokens=24)
    stop = full[4:6]
    expected = full[: full.index(stop)]
    reply = client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=24, temperature=0, stop=[stop, "never-there"])
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (expected, "stop")
    chat = ChatOpenAI(base_url=f"{served.url}/v1", api_key="unused", model="personactl", temperature=0, max_tokens=24, max_retries=0)
    assert chat.invoke(HELLO, stop=[stop]).content == expected
    legacy = LangChainOpenAI(base_url=f"{served.url}/v1", api_key="unused", model="personactl", temperature=0, max_tokens=24, max_retries=0)
    assert legacy.invoke("<user>hello there</s><assistant>", stop=[stop]) == expected  # the chat prompt, as the template writes it


# n


def test_n_choices_are_independent_seeded_generations_with_summed_usage(client):
    kw = {"model": "personactl", "messages": HELLO, "max_tokens": 8, "temperature": 1.0}
    reply = client.chat.completions.create(n=3, seed=5, **kw)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    alone = [client.chat.completions.create(seed=5 + i, **kw) for i in range(3)]
    assert [c.message.content for c in reply.choices] == [a.choices[0].message.content for a in alone]
    assert len({c.message.content for c in reply.choices}) > 1
    assert reply.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    assert reply.usage.prompt_tokens == alone[0].usage.prompt_tokens  # the prompt counts once

    stream = client.chat.completions.create(n=3, seed=5, stream=True, stream_options={"include_usage": True}, **kw)
    texts, chunks = ["", "", ""], list(stream)
    for chunk in chunks[:-1]:
        assert chunk.usage is None and len(chunk.choices) == 1
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    assert texts == [c.message.content for c in reply.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage


def test_completions_take_n_and_several_prompts(client):
    kw = {"model": "personactl", "max_tokens": 6, "temperature": 1.0, "seed": 11}
    reply = client.completions.create(prompt=[PROMPT, "<user>bye</s><assistant>"], n=2, **kw)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    second_prompt = client.completions.create(prompt="<user>bye</s><assistant>", n=2, **{**kw, "seed": 13})
    assert [c.text for c in reply.choices[2:]] == [c.text for c in second_prompt.choices]
    stream = client.completions.create(prompt=PROMPT, n=2, stream=True, stream_options={"include_usage": True}, **kw)
    chunks = list(stream)
    texts = ["", ""]
    for chunk in chunks[:-1]:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == [c.text for c in reply.choices[:2]]
    assert chunks[-1].choices == [] and chunks[-1].usage == client.completions.create(prompt=PROMPT, n=2, **kw).usage


def test_n_is_capped_with_a_400(client):
    with pytest.raises(BadRequestError, match="n"):
        client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=4, n=9)
    with pytest.raises(BadRequestError, match="16 x 8 choices is over this server's limit of 64"):
        client.chat.completions.create(model="personactl", messages=HELLO, max_tokens=16, n=8)
    with pytest.raises(BadRequestError, match="at most 8"):
        client.completions.create(model="personactl", prompt=[PROMPT] * 3, max_tokens=2, n=3)
    reply = client.chat.completions.create(model="personactl", messages=HELLO, n=8)  # no max_tokens: 64 // 8 each
    assert len(reply.choices) == 8 and all(c.finish_reason in ("stop", "length") for c in reply.choices)


def test_stream_options_include_usage_sends_a_last_usage_chunk(client):
    kw = {"model": "personactl", "max_tokens": 6, "temperature": 0}
    whole = client.chat.completions.create(messages=HELLO, **kw)
    chunks = list(client.chat.completions.create(messages=HELLO, stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.usage is None for c in client.chat.completions.create(messages=HELLO, stream=True, **kw))
    with pytest.raises(BadRequestError, match="stream_options"):
        client.chat.completions.create(messages=HELLO, stream_options={"include_usage": True}, **kw)


# messages


def test_content_parts_and_the_developer_role(client, submitted):
    _answer(
        client,
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
        ],
    )
    assert submitted[-1].prompt == "<system>be brief</s><user>hel\nlo</s><assistant>"
    with pytest.raises(BadRequestError, match="image_url"):
        _answer(
            client,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        )


def test_tool_calls_and_tool_results_reach_a_template_that_does_not_know_tools(client, submitted):
    messages = [
        {"role": "user", "content": "add"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
    ]
    _answer(client, messages=messages)
    assert submitted[-1].prompt == '<user>add</s><assistant>{"name": "add", "arguments": {"x": 1}}</s><tool>2</s><assistant>'


def test_a_template_that_knows_tools_gets_them_in_its_own_format():
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"x": 1}'}}
    assistant = Message(role="assistant", content=None, tool_calls=[call]).for_template(template_knows_tools=True)
    assert assistant == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"x": 1}}}],
    }
    tool = Message(role="tool", content=[{"type": "text", "text": "2"}], tool_call_id="c1").for_template(template_knows_tools=True)
    assert tool == {"role": "tool", "content": "2", "tool_call_id": "c1"}


def test_a_template_that_cannot_take_a_role_is_a_400():
    strict = from_model(tiny_model("llama"), char_tokenizer(STRICT_TEMPLATE), name="tiny-strict")
    with running_server(strict, ServerSettings(port=0, max_tokens=16)) as served:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
        assert _answer(client, max_tokens=2, messages=[{"role": "developer", "content": "x"}, *HELLO]) is not None
        with pytest.raises(BadRequestError, match=r"chat template .*\(roles: tool, user\)"):
            _answer(client, max_tokens=2, messages=[*HELLO, {"role": "tool", "tool_call_id": "c1", "content": "2"}])


def test_explicit_nulls_mean_omitted(served, client):
    nulls = {key: None for key in ("seed", "temperature", "top_p", "stream", "n", "max_tokens", "stop", "stream_options")}
    messages = [*HELLO, {"role": "assistant", "content": None}, {"role": "user", "content": "and?"}]
    chat = _post(served, "chat/completions", {"model": "personactl", "messages": messages, "logprobs": None, "top_logprobs": None, **nulls})
    assert chat.status_code == 200 and len(chat.json()["choices"]) == 1
    completion = _post(served, "completions", {"model": "personactl", "prompt": PROMPT, "logprobs": None, **nulls})
    assert completion.status_code == 200 and completion.json()["choices"][0]["logprobs"] is None
    with pytest.raises(BadRequestError, match="user message needs its content"):
        _answer(client, messages=[{"role": "user", "content": None}])


# the seed, and requests that must fail alone


def test_an_omitted_seed_is_random_and_a_given_seed_reproduces(client):
    kw = {"max_tokens": 16, "temperature": 1.0}
    assert len({_answer(client, **kw) for _ in range(3)}) > 1
    assert len({_answer(client, seed=2**63 - 1, **kw) for _ in range(2)}) == 1
    for seed in (2**63, 2**64, -1):
        with pytest.raises(BadRequestError, match="seed"):
            _answer(client, seed=seed)


def test_text_that_cannot_be_encoded_is_a_400_naming_the_field(served):
    bad = {"model": "personactl", "max_tokens": 4}
    cases = [
        ("chat/completions", {"messages": [{"role": "user", "content": "hi \ud800"}]}, "messages.0.content"),
        ("chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}, "messages.0.content"),
        ("chat/completions", {"messages": HELLO, "stop": ["\udfff"]}, "stop"),
        ("completions", {"prompt": "\ud800"}, "prompt"),
        ("completions", {"prompt": ["ok", "\ud800"]}, "prompt"),
    ]
    for path, body, field in cases:
        response = _post(served, path, {**bad, **body})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"].startswith(field) and "UTF-8" in response.json()["error"]["message"]


def test_a_bad_request_sent_with_good_ones_fails_alone(served):
    good = {"model": "personactl", "messages": HELLO, "max_tokens": 6, "temperature": 0}
    bodies = [good, {**good, "seed": 2**64}, good, {**good, "messages": [{"role": "user", "content": "\ud800"}]}, good]
    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(lambda body: _post(served, "chat/completions", body).status_code, bodies))
    assert statuses == [200, 400, 200, 400, 200]


# logprobs and offsets


def test_logprob_bytes_are_the_tokens_own_bytes_even_for_half_a_character():
    backbone = byte_level_backbone()
    with running_server(backbone, ServerSettings(port=0, max_tokens=16)) as served:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="personactl", messages=HELLO, max_tokens=12, temperature=1.0, seed=3, logprobs=True, top_logprobs=20
        )
    content = reply.choices[0].logprobs.content
    entries = [entry for token in content for entry in [token, *token.top_logprobs]]
    byte_tokens = [entry for entry in entries if entry.token not in SPECIALS]
    assert byte_tokens and all(len(entry.bytes) == 1 for entry in byte_tokens)  # every non-special token is one byte
    assert any(entry.bytes[0] >= 0x80 for entry in byte_tokens)  # half characters were among them
    for token in content:  # the 20 alternatives are 20 different tokens, so 20 different byte strings
        assert len({tuple(entry.bytes) for entry in token.top_logprobs}) == 20
    chosen = b"".join(bytes(token.bytes) for token in content if token.token not in SPECIALS)
    assert chosen.decode("utf-8", errors="replace").startswith(reply.choices[0].message.content)


def test_text_offset_is_each_tokens_character_offset_in_the_text(client):
    """Also while the engine holds text back because it may begin a stop string (which here never completes)."""
    specials = char_tokenizer().all_special_tokens
    kw = {"model": "personactl", "prompt": PROMPT, "max_tokens": 16, "temperature": 1.0, "seed": 2, "logprobs": 1}
    choice = client.completions.create(**kw).choices[0]
    tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
    assert len(offsets) == len(tokens) and offsets[0] == 0
    for token, offset in zip(tokens, offsets):
        if token not in specials:
            assert choice.text[offset : offset + len(token)] == token
    streamed = [c.choices[0].logprobs.text_offset for c in client.completions.create(stream=True, **kw) if c.choices[0].finish_reason is None]
    assert [o for chunk in streamed for o in chunk] == offsets
    stops = [c + "\x01" for c in sorted(set(choice.text) - {" "})[:4]]
    pieces = [c.choices[0] for c in client.completions.create(stream=True, stop=stops, **kw) if c.choices[0].finish_reason is None]
    assert any(p.text == "" and p.logprobs.tokens[0] not in specials for p in pieces)  # some text was held back
    held = client.completions.create(stop=stops, **kw).choices[0]
    assert (held.text, held.logprobs.text_offset) == (choice.text, offsets)


def test_an_empty_completions_prompt_generates_from_the_bos_token(client):
    reply = client.completions.create(model="personactl", prompt="", max_tokens=4, temperature=0)
    assert reply.usage.prompt_tokens == 1 and reply.choices[0].finish_reason in ("stop", "length")


# langchain-openai


def test_langchain_chat_and_completions_classes(served):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_openai import ChatOpenAI
    from langchain_openai import OpenAI as LangChainOpenAI

    common = {"base_url": f"{served.url}/v1", "api_key": "unused", "model": "personactl", "max_retries": 0}
    chat = ChatOpenAI(**common, temperature=0, max_tokens=8, stream_usage=True)
    reply = chat.invoke([SystemMessage("be brief"), HumanMessage("hello there")])
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] >= 1
    streamed = list(chat.stream([SystemMessage("be brief"), HumanMessage("hello there")]))
    assert "".join(c.content for c in streamed) == reply.content
    assert sum(c.usage_metadata["output_tokens"] for c in streamed if c.usage_metadata) == reply.usage_metadata["output_tokens"]
    tools = [HumanMessage("add"), AIMessage("", tool_calls=[{"name": "add", "args": {"x": 1}, "id": "c1"}]), ToolMessage("2", tool_call_id="c1")]
    assert isinstance(chat.invoke(tools).content, str)
    several = ChatOpenAI(**common, temperature=1.0, max_tokens=6, n=2, seed=4).generate([[HumanMessage("hello there")]])
    assert len(several.generations[0]) == 2

    legacy = LangChainOpenAI(**common, temperature=0, max_tokens=6)  # sends seed: null, logprobs: null
    assert isinstance(legacy.invoke(PROMPT), str)
    assert len(legacy.batch([PROMPT, "<user>bye</s><assistant>"])) == 2
