"""A fake OpenAI-compatible Chat Completions server on loopback, for tests and benchmarks.

It speaks the real JSON and picks its top logprobs from the answer inside the
prompt: "arr" -> PIRATE, "zzz" -> REFUSAL, anything else -> PLAIN (one token
each, as a tokenizer with whole-number tokens writes them). An answer that
holds a key of `FakeChat.trees` is judged by a model that writes numbers digit
by digit: the tree gives the next-token table after the text written so far,
the server answers greedily, and it continues a final assistant message
("prefill") or writes a GBNF grammar's leading digits ("grammar") only when
`FakeChat.follow_ups` says so; otherwise it ignores both, as servers that do
not know them do. Canned chat answers queued in `FakeChat.answers` are sent
instead, one per request, in order.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What the fake judge "thinks", by the answer it reads; expected scores by hand.
PIRATE = {"90": 0.5, "100": 0.3, " 90": 0.1, "Hello": 0.1}  # (0.6*90 + 0.3*100) / 0.9
PIRATE_SCORE = (0.6 * 90 + 0.3 * 100) / 0.9
PLAIN = {"10": 0.6, "20": 0.2, "I": 0.2}  # (0.6*10 + 0.2*20) / 0.8
PLAIN_SCORE = (0.6 * 10 + 0.2 * 20) / 0.8
REFUSAL = {"Sorry": 0.9, "5": 0.1}  # number mass 0.1 < 0.25 -> None

# Digit-by-digit judges: the next-token table after each text written; "<end>" ends the answer (finish_reason "stop").
# Greedy "95", but "1" (then "00") is as likely as "9": the branch after "1" is never in the greedy answer.
NINETY_FIVE = {
    "": {"9": 0.5, "1": 0.5},
    "9": {"5": 0.9, "0": 0.1},
    "95": {"<end>": 1.0},
    "90": {"<end>": 1.0},
    "1": {"0": 1.0},
    "10": {"0": 1.0},
    "100": {"<end>": 1.0},
}
NINETY_FIVE_SCORE = 0.5 * (0.9 * 95 + 0.1 * 90) + 0.5 * 100  # 97.25
NINETY_FIVE_BORROWED = 0.5 * (0.9 * 95 + 0.1 * 90) + 0.5 * (0.9 * 15 + 0.1 * 10)  # 54.5: "1" read with the table after "9"
# Greedy "To add the", not a number; the digits "4" (then "5" or "0") and "8" (then "5") carry 0.35.
TO_ADD = {
    "": {"To": 0.5, "4": 0.19, "8": 0.16, "The": 0.15},
    "To": {" add": 1.0},
    "To add": {" the": 1.0},
    "4": {"5": 0.6, "0": 0.4},
    "45": {"<end>": 1.0},
    "8": {"5": 1.0},
    "85": {"<end>": 1.0},
}
TO_ADD_SCORE = (0.19 * (0.6 * 45 + 0.4 * 40) + 0.16 * 85) / 0.35
TO_ADD_ONE_DIGIT = (0.19 * 4 + 0.16 * 8) / 0.35  # 5.8: every digit branch read as a one-digit number
EXTRAS = ("continue_final_message", "add_generation_prompt", "grammar")  # what OpenAI's own API refuses


class FakeChat:
    """State of a fake OpenAI-compatible server: requests seen, scripted failures, in-flight peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.auth: list[str | None] = []  # Authorization headers, in order
        self.script: list[int | str] = []  # per request, in order: an HTTP status, "hang" or "nologprobs"
        self.answers: list[str] = []  # per request, in order: the whole answer text (finish_reason "stop", no logprobs)
        self.trees: dict[str, dict[str, dict[str, float]]] = {}  # answer marker -> digit-by-digit judge
        self.follow_ups: set[str] = set()  # "prefill", "grammar": what this server honours
        self.refuse_extras = False  # answer 400 to the fields in EXTRAS, as OpenAI does
        self.release = threading.Event()  # a "hang" request waits for it (set when the server stops)
        self.hung = 0
        self.hold: threading.Event | None = None  # when given, every request waits for it (while counted in flight)
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def answer_in(prompt: str) -> str:
    return prompt.split("[ANSWER START]", 1)[-1].split("[ANSWER END]", 1)[0]


def table_for(prompt: str) -> dict[str, float]:
    answer = answer_in(prompt)
    if "zzz" in answer:
        return REFUSAL
    return PIRATE if "arr" in answer.lower() else PLAIN


def completion_json(model: str, prompt: str, with_logprobs: bool = True) -> dict:
    """A Chat Completions response as OpenAI sends it, with max_tokens=1 and top logprobs."""
    top = [{"token": tok, "logprob": math.log(p), "bytes": list(tok.encode())} for tok, p in sorted(table_for(prompt).items(), key=lambda kv: -kv[1])]
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


def position(token: str, table: dict[str, float]) -> dict:
    """One logprobs.content entry: the token written and the table it was chosen from."""
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in sorted(table.items(), key=lambda kv: -kv[1])]
    return {"token": token, "logprob": math.log(table.get(token, 1e-9)), "bytes": list(token.encode()), "top_logprobs": top}


def tree_json(model: str, tree: dict[str, dict[str, float]], body: dict, follow_ups: set[str]) -> dict:
    """A digit-by-digit judge's greedy answer, continuing a prefill or writing a grammar's digits when honoured."""
    messages = body["messages"]
    written = messages[-1]["content"] if "prefill" in follow_ups and messages[-1]["role"] == "assistant" else ""
    match = re.match(r'root ::= "(\d*)"', body.get("grammar") or "")
    forced = match.group(1) if match and "grammar" in follow_ups else ""
    content, finish = [], "length"
    for step in range(body["max_tokens"]):
        table = tree.get(written, {"<end>": 1.0})
        token = forced[step] if step < len(forced) else max(table, key=table.get)
        if token == "<end>":
            finish = "stop"
            break
        content.append(position(token, table))
        written += token
    text = "".join(p["token"] for p in content)
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": {"content": content, "refusal": None},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(content), "total_tokens": 1 + len(content)},
    }


def answer_json(model: str, content: str) -> dict:
    """A Chat Completions response carrying a canned answer, as OpenAI sends it without logprobs."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
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
                if state.hold is not None:
                    state.hold.wait()
                time.sleep(state.delay)
                if not self.path.endswith("/chat/completions"):
                    self.send_json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})
                elif isinstance(action, int):
                    message = f"scripted failure {action}\nsecond line of detail"
                    error = {"message": message, "type": "server_error", "param": None, "code": None}
                    self.send_json(action, {"error": error})
                elif canned is not None:
                    self.send_json(200, answer_json(body["model"], canned))
                elif state.refuse_extras and any(key in body for key in EXTRAS):
                    error = {"message": "Unrecognized request argument supplied", "type": "invalid_request_error"}
                    self.send_json(400, {"error": error})
                elif action == "hang":
                    with state.lock:
                        state.hung += 1
                    state.release.wait()  # never answered while the client waits
                else:
                    prompt = body["messages"][0]["content"]
                    tree = next((t for key, t in state.trees.items() if key in answer_in(prompt)), None)
                    if tree is not None:
                        self.send_json(200, tree_json(body["model"], tree, body, state.follow_ups))
                    else:
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
        state.release.set()
        if state.hold is not None:
            state.hold.set()
        httpd.shutdown()
        httpd.server_close()
