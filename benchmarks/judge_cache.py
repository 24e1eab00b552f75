"""Judge phase of a repeated sweep: LLM judge against an endpoint vs the disk cache.

Run: .venv/bin/python benchmarks/judge_cache.py
The endpoint is the tests' fake OpenAI-compatible server on loopback with a
fixed 100 ms latency per request (a fast real API is slower), concurrency 8.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _table import write_section  # noqa: E402
from fake_openai import FakeChat, serve  # noqa: E402

from personactl import load_trait  # noqa: E402
from personactl.judges.cache import JudgeCache  # noqa: E402
from personactl.judges.llm import OpenAIJudge  # noqa: E402

N_ANSWERS = 240  # a 6-coefficient x 20-question x 2-sample sweep


def main() -> None:
    trait = load_trait("pirate")
    questions = [trait.eval_questions[i % len(trait.eval_questions)] for i in range(N_ANSWERS)]
    answers = [f"Arr, answer number {i} about the sea." if i % 2 else f"Plain answer number {i}." for i in range(N_ANSWERS)]
    state = FakeChat()
    state.delay = 0.1
    with tempfile.TemporaryDirectory() as tmp, serve(state) as base_url:
        cache = JudgeCache(Path(tmp) / "cache.sqlite")
        judge = OpenAIJudge("fake-judge", trait.rubric, base_url=base_url, api_key="x", concurrency=8, cache=cache)
        start = time.perf_counter()
        first = judge.score(questions, answers)
        t_first = time.perf_counter() - start
        sent = state.count
        start = time.perf_counter()
        second = judge.score(questions, answers)
        t_second = time.perf_counter() - start
    assert first == second and state.count == sent, "the repeated run must send nothing"
    rows = [
        {"judge phase": f"first sweep, {N_ANSWERS} answers, {sent} requests", "seconds": t_first, "speed-up": 1.0},
        {"judge phase": "repeated sweep, all cached, 0 requests", "seconds": t_second, "speed-up": t_first / t_second},
    ]
    print(write_section("judge_cache", "Judge cache: repeated sweep's judge phase", rows, "Fake endpoint: 100 ms per request, concurrency 8."))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
