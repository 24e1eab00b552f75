"""The LLM judge: logprob weighting, and the real `openai` client against a fake endpoint on loopback.

The fake server speaks the Chat Completions JSON and picks its top logprobs from
the answer inside the prompt, so these tests exercise the real request, parsing,
retries, concurrency and cache paths, with no network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import pytest
from fake_openai import (
    NINETY_FIVE,
    NINETY_FIVE_BORROWED,
    NINETY_FIVE_SCORE,
    PIRATE_SCORE,
    PLAIN_SCORE,
    TO_ADD,
    TO_ADD_ONE_DIGIT,
    TO_ADD_SCORE,
    FakeChat,
    serve,
)

from personactl.errors import PersonactlError
from personactl.judges.base import COHERENCE_RUBRIC, TOP_LOGPROBS, fill_rubric, weighted_score
from personactl.judges.cache import JudgeCache, default_cache_path
from personactl.judges.llm import NUMBER_TOKENS, JudgeError, OpenAIJudge, coherence_judge, parse_judge_spec

RUBRIC = "Is this a pirate?\n[QUESTION START]{question}[QUESTION END]\n[ANSWER START]{answer}[ANSWER END]\nSay 0-100."
ENV_VARS = ("PERSONACTL_JUDGE_BASE_URL", "OPENAI_BASE_URL", "PERSONACTL_JUDGE_API_KEY", "OPENAI_API_KEY")


# ---------------------------------------------------------------- weighted_score


def logs(probs: dict[str, float]) -> dict[str, float]:
    return {tok: math.log(p) for tok, p in probs.items()}


def test_weighted_score_ignores_words():
    assert weighted_score(logs({"80": 0.5, "90": 0.3, "Hello": 0.2})) == pytest.approx((0.5 * 80 + 0.3 * 90) / 0.8)


def test_weighted_score_none_below_min_mass():
    assert weighted_score(logs({"50": 0.2, "No": 0.8})) is None
    assert weighted_score(logs({"50": 0.25, "No": 0.75})) == pytest.approx(50)
    assert weighted_score({}) is None


def test_weighted_score_ignores_out_of_range_and_leading_zeros():
    table = logs({"101": 0.3, "007": 0.2, "-5": 0.1, "40": 0.3, "0": 0.1})
    assert weighted_score(table) == pytest.approx((0.3 * 40 + 0.1 * 0) / 0.4)


def test_weighted_score_whitespace_and_spellings_add_up():
    assert weighted_score(logs({" 50": 0.6, "Hi": 0.4})) == pytest.approx(50)
    # "70" and " 70" are one number: 0.3 + 0.3 of mass at 70, 0.2 at 100.
    assert weighted_score(logs({"70": 0.3, " 70": 0.3, "100\n": 0.2, "x": 0.2})) == pytest.approx((0.6 * 70 + 0.2 * 100) / 0.8)


# ---------------------------------------------------------------- the fake endpoint


@pytest.fixture
def server(monkeypatch):
    """A fake endpoint on a free loopback port; yields (state, base_url)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    state = FakeChat()
    with serve(state) as base_url:
        yield state, base_url


def judge_for(base_url: str, **kw) -> OpenAIJudge:
    kw.setdefault("backoff", 0.01)
    return OpenAIJudge("fake-judge", RUBRIC, base_url=base_url, api_key="test-key", **kw)


QUESTIONS = ["Who are you?", "What is the sea?", "Say something."]
ANSWERS = ["Arr, a pirate I be!", "A large body of water.", "zzz"]


# ---------------------------------------------------------------- OpenAIJudge


def test_scores_through_real_client(server):
    state, url = server
    judge = judge_for(url)
    assert judge.name == "openai:fake-judge"
    scores = judge.score(QUESTIONS, ANSWERS)
    assert scores[0] == pytest.approx(PIRATE_SCORE)
    assert scores[1] == pytest.approx(PLAIN_SCORE)
    assert scores[2] is None
    assert state.count == 3
    by_prompt = {r["messages"][0]["content"]: r for r in state.requests}
    request = by_prompt[fill_rubric(RUBRIC, QUESTIONS[0], ANSWERS[0])]
    assert request["_path"] == "/v1/chat/completions"
    assert request["model"] == "fake-judge"
    assert request["messages"] == [{"role": "user", "content": fill_rubric(RUBRIC, QUESTIONS[0], ANSWERS[0])}]
    assert (request["max_tokens"], request["temperature"], request["seed"]) == (NUMBER_TOKENS, 0, 0)
    assert request["logprobs"] is True and request["top_logprobs"] == TOP_LOGPROBS
    assert state.auth[0] == "Bearer test-key"


def test_empty_batch_sends_nothing(server):
    state, url = server
    assert judge_for(url).score([], []) == []
    assert state.count == 0


def test_length_mismatch_is_an_error(server):
    _, url = server
    with pytest.raises(JudgeError, match="2 questions but 1 answers"):
        judge_for(url).score(["a", "b"], ["x"])


def test_retries_429_then_500_then_succeeds(server):
    state, url = server
    state.script = [429, 500]
    assert judge_for(url).score(QUESTIONS[:1], ANSWERS[:1]) == [pytest.approx(PIRATE_SCORE)]
    assert state.count == 3


def test_retries_a_timeout(server):
    state, url = server
    state.script = ["hang"]  # the first request is never answered; the client's timeout is what ends it
    assert judge_for(url, timeout=1.0).score(QUESTIONS[1:2], ANSWERS[1:2]) == [pytest.approx(PLAIN_SCORE)]
    assert state.hung == 1 and state.count >= 2  # retried after the timeout (again, should a busy machine time out more)


def test_gives_up_after_max_retries(server):
    state, url = server
    state.script = [503, 503, 503]
    with pytest.raises(JudgeError, match="after 3 attempts"):
        judge_for(url, max_retries=2).score(QUESTIONS[:1], ANSWERS[:1])
    assert state.count == 3


def test_client_error_raises_without_retry(server):
    state, url = server
    state.script = [400]
    with pytest.raises(JudgeError, match="HTTP 400: scripted failure 400") as info:
        judge_for(url).score(QUESTIONS[:1], ANSWERS[:1])
    assert "second line" not in str(info.value)
    assert isinstance(info.value, PersonactlError)
    assert state.count == 1


def test_missing_logprobs_is_an_error(server):
    state, url = server
    state.script = ["nologprobs"]
    with pytest.raises(JudgeError, match="no logprobs"):
        judge_for(url).score(QUESTIONS[:1], ANSWERS[:1])


def test_cache_skips_known_pairs(server, tmp_path):
    state, url = server
    cache = JudgeCache(tmp_path / "cache.sqlite")
    first = judge_for(url, cache=cache).score(QUESTIONS, ANSWERS)
    assert state.count == 3 and len(cache) == 3 and cache.misses == 3
    again = judge_for(url, cache=JudgeCache(tmp_path / "cache.sqlite")).score(QUESTIONS, ANSWERS)
    assert state.count == 3  # zero new requests, the None included
    assert again == first and again[2] is None
    other = OpenAIJudge("fake-judge", RUBRIC + " ", base_url=url, api_key="k", cache=cache)
    other.score(QUESTIONS[:1], ANSWERS[:1])  # another rubric is another judge
    assert state.count == 4


def test_duplicate_pairs_sent_once(server):
    state, url = server
    scores = judge_for(url).score([QUESTIONS[0]] * 4, [ANSWERS[0]] * 4)
    assert scores == [pytest.approx(PIRATE_SCORE)] * 4
    assert state.count == 1


def test_concurrency_limit(server):
    state, url = server
    state.hold = threading.Event()  # the server answers nothing until the limit is reached
    n = 12
    scoring = threading.Thread(target=judge_for(url, concurrency=3).score, args=([f"q{i}" for i in range(n)], [f"a{i}" for i in range(n)]))
    scoring.start()
    deadline = time.monotonic() + 60  # reached only when the judge never has 3 requests in flight
    while state.in_flight < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    state.hold.set()
    scoring.join()
    assert state.count == n
    assert state.max_in_flight == 3


def test_score_inside_running_loop(server):
    _, url = server
    judge = judge_for(url)

    async def main() -> tuple[list[float | None], list[float | None]]:
        return judge.score(QUESTIONS[:1], ANSWERS[:1]), await judge.ascore(QUESTIONS[1:2], ANSWERS[1:2])

    sync_scores, async_scores = asyncio.run(main())
    assert sync_scores == [pytest.approx(PIRATE_SCORE)]
    assert async_scores == [pytest.approx(PLAIN_SCORE)]


def test_missing_key_is_an_error(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JudgeError, match="PERSONACTL_JUDGE_API_KEY"):
        OpenAIJudge("gpt-4.1-mini", RUBRIC)


def test_endpoint_and_key_from_env(server, monkeypatch):
    state, url = server
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/unused")
    monkeypatch.setenv("PERSONACTL_JUDGE_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    judge = OpenAIJudge("fake-judge", RUBRIC)
    assert judge.base_url == url and judge.judge_id.startswith(f"openai:fake-judge@{url}#")
    assert judge.score(QUESTIONS[:1], ANSWERS[:1]) == [pytest.approx(PIRATE_SCORE)]
    assert state.auth[0] == "Bearer env-key"


def test_coherence_judge(server):
    state, url = server
    judge = coherence_judge("fake-judge", base_url=url, api_key="k")
    assert judge.name == "openai:fake-judge:coherence" and judge.rubric == COHERENCE_RUBRIC
    assert coherence_judge("m", name="mine", api_key="k").name == "mine:coherence"
    assert judge.score(["Hi?"], ["Arr matey"]) == [pytest.approx(PIRATE_SCORE)]
    assert state.requests[0]["messages"][0]["content"] == fill_rubric(COHERENCE_RUBRIC, "Hi?", "Arr matey")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("openai:gpt-4.1-mini", ("openai", "gpt-4.1-mini")),
        ("local:Qwen/Qwen2.5-7B-Instruct", ("local", "Qwen/Qwen2.5-7B-Instruct")),
        ("local:/models/judge", ("local", "/models/judge")),
        ("openai:org/model:tag", ("openai", "org/model:tag")),
        ("embed", ("embed", "")),
    ],
)
def test_parse_judge_spec(spec, expected):
    assert parse_judge_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "gpt-4", "openai:", "local:  ", "embed:x", "anthropic:claude"])
def test_parse_judge_spec_rejects(spec):
    with pytest.raises(JudgeError, match="openai:MODEL"):
        parse_judge_spec(spec)


# ---------------------------------------------------------------- digit branches the greedy answer did not take


def branch_requests(state: FakeChat) -> list[dict]:
    """The follow-up requests: a prefilled assistant message or a grammar."""
    return [r for r in state.requests if r["messages"][-1]["role"] == "assistant" or "grammar" in r]


def test_an_unseen_first_digit_is_read_by_a_prefill_not_borrowed(server):
    state, url = server
    state.trees = {"ninety-five": NINETY_FIVE}
    state.follow_ups = {"prefill"}  # as llama.cpp's server: a final assistant message is continued
    judge = judge_for(url, concurrency=1)
    assert judge.score(["q"], ["ninety-five"]) == [pytest.approx(NINETY_FIVE_SCORE)]  # 97.25, not 54.5
    assert NINETY_FIVE_BORROWED == pytest.approx(54.5)
    probe, branch = branch_requests(state)
    assert probe["messages"][-1] == {"role": "assistant", "content": "9"} and probe["max_tokens"] == 1
    assert branch["messages"][-1] == {"role": "assistant", "content": "1"} and branch["max_tokens"] == NUMBER_TOKENS - 1
    assert branch["continue_final_message"] is True and branch["add_generation_prompt"] is False  # vLLM's switch
    assert judge.follow_ups == {"prefill": True} and state.count == 3


def test_a_greedy_answer_that_is_no_number_has_its_digit_branches_read(server):
    state, url = server
    state.trees = {"to add": TO_ADD}
    state.follow_ups = {"prefill"}
    score = judge_for(url).score(["What is 40 + 45?"], ["to add"])[0]
    assert score == pytest.approx(TO_ADD_SCORE) and TO_ADD_ONE_DIGIT < 6  # not every branch as a one-digit number
    assert [r["messages"][-1]["content"] for r in branch_requests(state)] == ["To", "4", "8"]  # probe, then by likelihood


def test_a_server_that_ignores_prefills_is_read_through_a_grammar(server):
    state, url = server
    state.trees = {"ninety-five": NINETY_FIVE, "to add": TO_ADD}
    state.follow_ups = {"grammar"}  # as llama-cpp-python: a final assistant message starts a new turn
    judge = judge_for(url, concurrency=4)
    scores = judge.score(["q", "q"], ["ninety-five", "to add"])
    assert scores == [pytest.approx(NINETY_FIVE_SCORE), pytest.approx(TO_ADD_SCORE)]
    assert judge.follow_ups == {"prefill": False, "grammar": True}
    probes = [r for r in state.requests if r["messages"][-1]["role"] == "assistant"]
    assert len(probes) == 1  # one probe per judge, not per judgement
    grammars = sorted(r["grammar"] for r in state.requests if "grammar" in r)
    assert grammars == [f'root ::= "{d}" [^\\x00]*' for d in "148"]


@pytest.mark.parametrize("refuse", [False, True])
def test_no_score_when_the_server_cannot_read_a_branch(server, refuse, tmp_path):
    state, url = server
    state.trees = {"ninety-five": NINETY_FIVE, "to add": TO_ADD}
    state.refuse_extras = refuse  # True: 400 on unknown fields, as OpenAI; False: ignores them, a new turn
    judge = judge_for(url, cache=JudgeCache(tmp_path / "c.sqlite"))
    assert judge.score(["q", "q", "q"], ["ninety-five", "to add", "arr"]) == [None, None, pytest.approx(PIRATE_SCORE)]
    assert judge.follow_ups == {"prefill": False, "grammar": False}
    sent = state.count
    assert judge.score(["q", "q"], ["ninety-five", "to add"]) == [None, None] and state.count == sent  # cached


def test_a_branch_below_the_floor_is_left_out_without_a_request(server):
    state, url = server
    state.trees = {"eighty-five": {"": {"8": 0.995, "3": 0.005}, "8": {"5": 1.0}, "85": {"<end>": 1.0}}}
    judge = judge_for(url)
    assert judge.score(["q"], ["eighty-five"]) == [pytest.approx(85)]
    assert state.count == 1 and judge.follow_ups == {}


# ---------------------------------------------------------------- JudgeCache


def test_cache_keeps_none_apart_from_missing(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    assert cache.get("j", "q", "a") == (False, None)
    cache.put("j", "q", "a", None)
    cache.put("j", "q", "b", 42.5)
    assert cache.get("j", "q", "a") == (True, None)
    assert cache.get("j", "q", "b") == (True, 42.5)
    assert (cache.hits, cache.misses) == (2, 1)


def test_cache_keys_and_persistence(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    cache = JudgeCache(path)
    cache.put_many([("j", "q", "a", 1.0), ("j2", "q", "a", 2.0), ("j", "qa", "", 3.0), ("j", "q", "a", 4.0)])
    assert len(cache) == 3  # the last put replaced the first; ("q","a") and ("qa","") differ
    cache.close()
    reopened = JudgeCache(path)
    assert reopened.get("j", "q", "a") == (True, 4.0)
    assert reopened.get("j2", "q", "a") == (True, 2.0)
    assert reopened.get("j", "qa", "") == (True, 3.0)


def test_default_cache_path(monkeypatch, tmp_path):
    monkeypatch.delenv("PERSONACTL_CACHE_DIR", raising=False)
    assert default_cache_path() == Path.home() / ".cache" / "personactl" / "judge_cache.sqlite"
    monkeypatch.setenv("PERSONACTL_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "judge_cache.sqlite"
    assert JudgeCache().path == tmp_path / "judge_cache.sqlite"
