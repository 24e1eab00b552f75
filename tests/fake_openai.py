"""A fake OpenAI-compatible Chat Completions server on loopback, for tests and benchmarks.

It speaks the real JSON and picks its top logprobs from the answer inside the
prompt: "arr" -> PIRATE, "zzz" -> REFUSAL, anything else -> PLAIN. Canned chat
answers queued in `FakeChat.answers` are sent instead, one per request, in order.
"""

from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

# What the fake judge "thinks", by the answer it reads; expected scores by hand.
PIRATE = {"90": 0.5, "100": 0.3, " 90": 0.1, "Hello": 0.1}  # (0.6*90 + 0.3*100) / 0.9
PIRATE_SCORE = (0.6 * 90 + 0.3 * 100) / 0.9
PLAIN = {"10": 0.6, "20": 0.2, "I": 0.2}  # (0.6*10 + 0.2*20) / 0.8
PLAIN_SCORE = (0.6 * 10 + 0.2 * 20) / 0.8
REFUSAL = {"Sorry": 0.9, "5": 0.1}  # number mass 0.1 < 0.25 -> None


class FakeChat:
    """State of a fake OpenAI-compatible server: requests seen, scripted failures, in-flight peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.auth: list[str | None] = []  # Authorization headers, in order
        self.script: list[int | str] = []  # per request, in order: an HTTP status, "hang" or "nologprobs"
        self.answers: list[str] = []  # per request, in order: the whole answer text (finish_reason "stop", no logprobs)
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def table_for(prompt: str) -> dict[str, float]:
    answer = prompt.split("[ANSWER START]", 1)[-1].split("[ANSWER END]", 1)[0]
    if "zzz" in answer:
        return REFUSAL
    return PIRATE if "arr" in answer.lower() else PLAIN


def completion_json(model: str, prompt: str, with_logprobs: bool = True) -> dict:
    """A Chat Completions response as OpenAI sends it, with max_tokens=1 and top logprobs."""
    top = [
        {"token": tok, "logprob": math.log(p), "bytes": list(tok.encode())}
        for tok, p in sorted(table_for(prompt).items(), key=lambda kv: -kv[1])
    ]
    first = top[0]
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": first["token"], "refusal": None},
                "logprobs": {"content": [dict(first, top_logprobs=top)], "refusal": None} if with_logprobs else None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1, "total_tokens": len(prompt.split()) + 1},
    }


def answer_json(model: str, content: str) -> dict:
    """A Chat Completions response carrying a canned answer, as OpenAI sends it without logprobs."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(content.split()), "total_tokens": 1 + len(content.split())},
    }


def make_handler(state: FakeChat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout test)
                pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append(dict(body, _path=self.path))
                state.auth.append(self.headers.get("Authorization"))
                action = state.script.pop(0) if state.script else None
                canned = state.answers.pop(0) if state.answers and not isinstance(action, int) else None
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(state.delay)
                if not self.path.endswith("/chat/completions"):
                    self.send_json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})
                elif isinstance(action, int):
                    message = f"scripted failure {action}\nsecond line of detail"
                    error = {"message": message, "type": "server_error", "param": None, "code": None}
                    self.send_json(action, {"error": error})
                elif canned is not None:
                    self.send_json(200, answer_json(body["model"], canned))
                else:
                    if action == "hang":
                        time.sleep(0.6)
                    prompt = body["messages"][0]["content"]
                    self.send_json(200, completion_json(body["model"], prompt, action != "nologprobs"))
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@contextmanager
def serve(state: FakeChat) -> Iterator[str]:
    """Run the fake endpoint on a free loopback port; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
