"""The OpenAI-compatible judge against a real server: llama-cpp-python's, serving the embedded SmolLM2 on loopback.

SmolLM2's tokenizer writes numbers digit by digit, so a reading of the first
token alone can never exceed 9; the judge must read the number over the tokens
the server returns.
"""

import math
import socket
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from personactl.judges.base import weighted_score
from personactl.judges.llm import NUMBER_TOKENS, OpenAIJudge
from personactl.models import EMBEDDED_MODELS

QUESTIONS = ["What is 12 + 13? Reply with the number only.", "What is 10 times 10? Answer with just the number."]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama_cpp.server on a free 127.0.0.1 port; stopped however the tests end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(EMBEDDED_MODELS["smollm2-135m"].locate()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "2"]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as sink:  # a pipe nobody reads would fill up and stall the server
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base_url}/models", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.3)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


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
