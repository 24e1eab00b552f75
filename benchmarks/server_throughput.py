"""The persona server on SmolLM2-135M over loopback, through the openai client, and side by side with llama-cpp-python's server.

1. 16 concurrent requests with 16 different coefficients vs the same 16 served one by one (target >= 3x throughput).
2. The steering hook's cost: 16 concurrent steered requests vs 16 unsteered (target <= 3% of tokens/s).
3. A load test: 200 requests at concurrency 16, each with its own coefficient: errors, p50/p95 latency,
   and whether 32 of them (sampled) equal the same request served alone (greedy).
4. A mixed workload (long and short requests on a fixed, seeded arrival schedule, at most 16 in flight), replayed
   against: our server with continuous batching and with static batching (a batch runs to its end before new requests
   join), each request with its own persona; our continuous server unsteered; and llama-cpp-python's own OpenAI server
   on the same model's GGUF (127.0.0.1, as many threads as torch). p50/p95 latency of all and of the short requests,
   completion tokens/s; targets: a short request during long ones within 2x its time alone, and per-request personas
   at >= 1.0x llama-cpp-python's throughput. Measurement 1's 16 requests are also sent to llama-cpp-python.
Run: nice .venv/bin/python benchmarks/server_throughput.py (needs runs/demo-pirate/vector.safetensors from
`personactl demo` / `make demo`); ~10-15 minutes on 2 cores. It writes the `server` section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from _table import write_section
from openai import OpenAI

from personactl import load_model
from personactl.blackbox.llamacpp_server import llamacpp_server
from personactl.models import EMBEDDED_MODELS
from personactl.server import ServerSettings, running_server

TOKENS = 32
QUESTION = "How should I spend a rainy Sunday?"
CONCURRENCY = 16
LONG_TOKENS, SHORT_TOKENS = 128, (4, 8)
N_LONG, N_SHORT = 12, 24
MEAN_GAP_S = 0.35  # mean gap between arrivals (exponential): the last of the 36 arrives at 16.2 s, well before either server is done
ROUNDS = 2  # the mixed workload is replayed this many times per mode, modes interleaved
ALONE = 8  # short requests timed one at a time on an idle server
LLAMA_CTX = 2048
LONG_QUESTIONS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a steam engine works, step by step.",
    "Describe a walk through a busy market in a city you imagine, with all its sounds and smells.",
    "Write a detailed guide to planting a vegetable garden in spring.",
]
SHORT_QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "What is 2 + 2?",
    "Say hello.",
    "Which animal barks?",
    "What colour is the sky?",
]


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the replay starts
    question: str
    max_tokens: int
    coef: float
    long: bool


@dataclass(frozen=True)
class Replay:
    seconds: float  # from the replay's start to its last reply
    tokens: list[int]  # completion tokens of each request, in schedule order
    latencies: list[float]  # from each request's scheduled arrival to its reply (a wait for a client slot included)


def persona(coef: float | None) -> dict | None:
    return None if coef is None else {"persona": {"vectors": [{"name": "pirate", "coef": coef, "layers": [9]}]}}


def ask(client: OpenAI, coef: float | None, question: str = QUESTION, max_tokens: int = TOKENS) -> tuple[str, int, float]:
    start = time.perf_counter()
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0, extra_body=persona(coef)
    )
    return reply.choices[0].message.content, reply.usage.completion_tokens, time.perf_counter() - start


def concurrent(client: OpenAI, coefs: list[float | None], workers: int = CONCURRENCY) -> tuple[float, int, list]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda c: ask(client, c), coefs))
    return time.perf_counter() - start, sum(r[1] for r in results), results


def rate(timed: tuple[float, int, list]) -> float:
    """Tokens/s of a `concurrent` result."""
    return timed[1] / timed[0]


def one_by_one(client: OpenAI, coefs: list[float]) -> float:
    """Tokens/s of the requests sent one after the other."""
    start = time.perf_counter()
    tokens = sum(ask(client, c)[1] for c in coefs)
    return tokens / (time.perf_counter() - start)


def workload(seed: int = 0) -> list[Request]:
    """The mixed schedule: exponential gaps, long and short requests shuffled (the first is long), a coefficient each."""
    rng = random.Random(seed)
    kinds = [True] * (N_LONG - 1) + [False] * N_SHORT
    rng.shuffle(kinds)
    at, requests = 0.0, []
    for long in [True] + kinds:
        question = rng.choice(LONG_QUESTIONS if long else SHORT_QUESTIONS)
        max_tokens = LONG_TOKENS if long else rng.randint(*SHORT_TOKENS)
        requests.append(Request(round(at, 3), question, max_tokens, round(rng.uniform(-2, 2), 2), long))
        at += rng.expovariate(1 / MEAN_GAP_S)
    return requests


def replay(client: OpenAI, requests: list[Request], steered: bool) -> Replay:
    """Send each request at its time (at most CONCURRENCY in flight; later ones wait for a slot, and that wait counts)."""

    def send(request: Request, due: float) -> tuple[int, float]:
        tokens = ask(client, request.coef if steered else None, request.question, request.max_tokens)[1]
        return tokens, time.perf_counter() - due

    start = time.perf_counter()
    futures: list[Future] = []
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for request in requests:
            time.sleep(max(0.0, start + request.at - time.perf_counter()))
            futures.append(pool.submit(send, request, start + request.at))
        results = [f.result() for f in futures]
    return Replay(time.perf_counter() - start, [r[0] for r in results], [r[1] for r in results])


def alone(client: OpenAI, requests: list[Request], steered: bool) -> list[float]:
    """Latency of the first ALONE short requests of the schedule, each sent to an idle server."""
    shorts = [r for r in requests if not r.long][:ALONE]
    return [ask(client, r.coef if steered else None, r.question, r.max_tokens)[2] for r in shorts]


def p50_p95(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.2f} / {np.percentile(values, 95):.2f}" if values else ""


def existing(client: OpenAI) -> tuple[list[dict], list[float]]:
    """Measurements 1-3 on our continuous server; also returns measurement 1's coefficients (measurement 4 reuses them)."""
    coefs = [round(-2 + 4 * i / 15, 3) for i in range(16)]
    ask(client, 1.0)  # warm up
    rounds = [(one_by_one(client, coefs), rate(concurrent(client, coefs))) for _ in range(2)]  # interleaved
    serial, batched = max(r[0] for r in rounds), max(r[1] for r in rounds)
    rounds = [(rate(concurrent(client, [None] * 16)), rate(concurrent(client, [1.0] * 16))) for _ in range(2)]
    plain, steered = max(r[0] for r in rounds), max(r[1] for r in rounds)
    load_coefs = [round(-2 + 4 * i / 199, 3) for i in range(200)]
    load_s, load_tokens, load = concurrent(client, load_coefs)
    latencies = [r[2] for r in load]
    sample = list(range(0, 200, 200 // 32))[:32]
    same = sum(ask(client, load_coefs[i])[0] == load[i][0] for i in sample)
    rows = [
        row("16 requests one by one (16 coefficients)", serial, "1.00x"),
        row("the same 16 concurrently (one batch, per-row coefficients)", batched, f"{batched / serial:.2f}x one by one", target=">= 3x"),
        row("16 concurrent, unsteered", plain, "1.00x"),
        row("16 concurrent, steered (coef 1.0)", steered, f"{steered / plain:.3f}x unsteered", target=">= 0.97x"),
        row(
            "load: 200 requests at concurrency 16",
            load_tokens / load_s,
            "",
            all_=p50_p95(latencies),
            target=f"0 errors; {same}/{len(sample)} sampled answers equal the request alone",
        ),
    ]
    return rows, coefs


def row(serving: str, tokens_per_s: float | str, ratio: str, all_: str = "", short: str = "", target: str = "") -> dict:
    return {
        "serving": serving,
        "tokens/s": tokens_per_s,
        "ratio": ratio,
        "latency p50 / p95, all (s)": all_,
        "short requests p50 / p95 (s)": short,
        "target": target,
    }


@dataclass
class SideBySide:
    """Raw numbers of measurement 4, over all rounds."""

    replays: dict[str, list[Replay]]
    forwards: dict[str, int]  # our engines' forward passes (decode steps and prefills) during each mode's replays
    alone_ours: list[float]
    alone_llama: list[float]
    burst_ours: float  # best tokens/s of measurement 1's 16 concurrent requests (per-row coefficients) on ours
    burst_llama: float  # the same 16 requests, unsteered, on llama-cpp-python's server


def side_by_side(clients: dict[str, OpenAI], engines: dict, requests: list[Request], coefs: list[float]) -> SideBySide:
    """Replay the mixed workload on every mode, ROUNDS times, modes interleaved; time short requests alone and the
    16-request burst on both servers in every round."""
    modes = {"continuous": ("continuous", True), "static": ("static", True), "continuous_unsteered": ("continuous", False), "llama": ("llama", False)}
    result = SideBySide({mode: [] for mode in modes}, dict.fromkeys(modes, 0), [], [], 0.0, 0.0)
    for _ in range(ROUNDS):
        result.alone_ours += alone(clients["continuous"], requests, steered=True)
        result.alone_llama += alone(clients["llama"], requests, steered=False)
        for mode, (client, steered) in modes.items():
            start = engines[client].steps if client in engines else 0
            result.replays[mode].append(replay(clients[client], requests, steered))
            result.forwards[mode] += engines[client].steps - start if client in engines else 0
        result.burst_ours = max(result.burst_ours, rate(concurrent(clients["continuous"], coefs)))
        result.burst_llama = max(result.burst_llama, rate(concurrent(clients["llama"], [None] * len(coefs))))
    return result


def mixed_rows(m: SideBySide, requests: list[Request]) -> list[dict]:
    """Rows of measurement 4: throughput over all rounds (tokens / seconds, summed), latencies pooled over rounds."""
    speed = {mode: sum(sum(r.tokens) for r in rs) / sum(r.seconds for r in rs) for mode, rs in m.replays.items()}
    lat = {mode: [x for r in rs for x in r.latencies] for mode, rs in m.replays.items()}
    short = {mode: [x for r in rs for x, q in zip(r.latencies, requests) if not q.long] for mode, rs in m.replays.items()}
    slow = {mode: statistics.median(short[mode]) / statistics.median(m.alone_llama if mode == "llama" else m.alone_ours) for mode in m.replays}
    c, s, u, ll = (speed[mode] for mode in ("continuous", "static", "continuous_unsteered", "llama"))
    return [
        row("mixed: short requests alone, ours (a persona each)", "", "", short=p50_p95(m.alone_ours)),
        row("mixed: short requests alone, llama-cpp-python server", "", "", short=p50_p95(m.alone_llama)),
        row(
            "mixed: llama-cpp-python server (unsteered)",
            ll,
            "1.00x",
            p50_p95(lat["llama"]),
            p50_p95(short["llama"]),
            f"short under load {slow['llama']:.1f}x alone",
        ),
        row(
            "mixed: static batching, a persona per request",
            s,
            f"{s / ll:.2f}x llama-cpp",
            p50_p95(lat["static"]),
            p50_p95(short["static"]),
            f"short under load {slow['static']:.1f}x alone",
        ),
        row(
            "mixed: continuous batching, a persona per request",
            c,
            f"{c / ll:.2f}x llama-cpp, {c / s:.2f}x static",
            p50_p95(lat["continuous"]),
            p50_p95(short["continuous"]),
            f">= 1.0x llama-cpp; short under load {slow['continuous']:.1f}x alone (target <= 2x)",
        ),
        row(
            "mixed: continuous batching, unsteered",
            u,
            f"{u / ll:.2f}x llama-cpp",
            p50_p95(lat["continuous_unsteered"]),
            p50_p95(short["continuous_unsteered"]),
            f"the persona run is {c / u:.3f}x this (steering cost; target >= 0.97x)",
        ),
        row("16 concurrent x 32 tokens (measurement 1's requests), llama-cpp-python server, unsteered", m.burst_llama, "1.00x"),
        row("the same 16 on ours, per-row coefficients", m.burst_ours, f"{m.burst_ours / m.burst_llama:.2f}x llama-cpp", target=">= 1.0x"),
    ]


def note(m: SideBySide, requests: list[Request], threads: int, load: tuple[float, float]) -> str:
    """What every number of the table means, with the settings of both servers."""
    per_forward = ", ".join(f"{mode} {sum(sum(r.tokens) for r in m.replays[mode]) / n:.1f}" for mode, n in m.forwards.items() if n)
    last_long = max(r.at for r in requests if r.long)
    return (
        f"Greedy, openai client over 127.0.0.1, pirate vector at layer 9, `response` positions. Rows 1-5: {TOKENS} new tokens "
        "per request; one by one vs concurrently, and unsteered vs steered: best of 2 interleaved rounds. Mixed rows: one seeded schedule of "
        f"{N_LONG} long ({LONG_TOKENS} max tokens) and {N_SHORT} short ({SHORT_TOKENS[0]}-{SHORT_TOKENS[1]} max tokens) chat "
        f"requests, exponential gaps of mean {MEAN_GAP_S} s, at most {CONCURRENCY} in flight (a request that finds 16 "
        f"in flight waits for a slot, and that wait is in its latency); each mode replayed {ROUNDS} times, modes "
        "interleaved; tokens/s = completion tokens / seconds from the first arrival to the last reply, summed over rounds; "
        "latencies from each request's scheduled arrival to its full (non-streamed) reply, pooled over rounds. Our tokens/s "
        "grow with the rows that share a forward pass (llama-cpp-python's server runs one row): completion tokens per forward "
        f"pass in the mixed replays (prefills counted) {per_forward}, against about 16 in the 16-request rows. The last long "
        f"request arrives at {last_long:.1f} s and needs {LONG_TOKENS} decode steps after that, so the mixed tokens/s also "
        "measure how fast one request decodes, where llama.cpp's quantized batch-1 decode is faster than a PyTorch fp32 step. "
        "'A persona per request': each request its own pirate coefficient in [-2, 2]. 'Short under load x alone': median "
        f"latency of the short requests in the replays / median of the first {ALONE} of them sent one at a time to the same "
        'idle server (in every round, before its replays). Static batching: `ServerSettings(scheduling="static")`, a batch '
        "runs to its end before waiting requests join. The last two rows: best of the rounds, interleaved with the replays. "
        f"llama-cpp-python {version('llama-cpp-python')} server (`python -m llama_cpp.server`): the same SmolLM2 GGUF "
        f"({EMBEDDED_MODELS['smollm2-135m'].locate().name}), n_ctx {LLAMA_CTX}, n_threads {threads} (= torch threads), "
        "n_batch 512 (its default); it runs one request at a time (one lock around the model, no parallel slots) and "
        "cannot steer: its ModelSettings have no control-vector setting, so it ran unsteered (a global control vector "
        "costs llama.cpp +0.4%, see the llama.cpp section). Our server runs the de-quantized fp32 weights in PyTorch; "
        f"llama.cpp the quantized GGUF. 1-minute load average {load[0]:.1f} before the run, {load[1]:.1f} after it "
        f"({os.cpu_count()} cores; the run's own load included after)."
    )


def main() -> None:
    load_before = os.getloadavg()[0]
    threads = torch.get_num_threads()
    requests = workload()
    backbone = load_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        vectors = Path(folder) / "vectors"
        vectors.mkdir()
        shutil.copy("runs/demo-pirate/vector.safetensors", vectors / "pirate.safetensors")
        clients, engines = {}, {}
        for scheduling in ("continuous", "static"):
            served = stack.enter_context(running_server(backbone, ServerSettings(port=0, vectors=vectors, scheduling=scheduling)))
            clients[scheduling] = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
            engines[scheduling] = served.engine
        rows, coefs = existing(clients["continuous"])
        llama_url = stack.enter_context(
            llamacpp_server(EMBEDDED_MODELS["smollm2-135m"].locate(), Path(folder) / "llama.log", n_ctx=LLAMA_CTX, threads=threads)
        )
        clients["llama"] = OpenAI(base_url=llama_url, api_key="unused", max_retries=0)
        ask(clients["llama"], None)  # warm up
        ask(clients["static"], 1.0)
        measured = side_by_side(clients, engines, requests, coefs)
    rows += mixed_rows(measured, requests)
    data = {
        "schedule": [r.__dict__ for r in requests],
        **{k: v for k, v in measured.__dict__.items() if k != "replays"},
        "replays": {mode: [r.__dict__ for r in rs] for mode, rs in measured.replays.items()},
        "llama_settings": {"n_ctx": LLAMA_CTX, "n_threads": threads, "n_batch": 512},
        "load_average": [load_before, os.getloadavg()[0]],
    }
    path = write_section(
        "server",
        "Persona server: batching across clients, steering cost, load, and llama-cpp-python's server (SmolLM2-135M)",
        rows,
        note(measured, requests, threads, tuple(data["load_average"])),
        data=data,
    )
    for r in rows:
        print(r)
    print(f"wrote the `server` section of {path} and its numbers to {path.parent / path.stem / 'server.json'}")


if __name__ == "__main__":
    main()
