"""The persona server on SmolLM2-135M over loopback, through the openai client.

1. 16 concurrent requests with 16 different coefficients vs the same 16 served one by one (target >= 3x throughput).
2. The steering hook's cost: 16 concurrent steered requests vs 16 unsteered (target <= 3% of tokens/s).
3. A load test: 200 requests at concurrency 16, each with its own coefficient: errors, p50/p95 latency,
   and whether 32 of them (sampled) equal the same request served alone (greedy).
Run: .venv/bin/python benchmarks/server_throughput.py (needs runs/demo-pirate/vector.safetensors from `personactl demo`)
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

from _table import write_section
from personactl import load_model
from personactl.server import ServerSettings, running_server

TOKENS = 32
QUESTION = "How should I spend a rainy Sunday?"


def ask(client: OpenAI, coef: float | None, question: str = QUESTION) -> tuple[str, int, float]:
    extra = None if coef is None else {"persona": {"vectors": [{"name": "pirate", "coef": coef, "layers": [9]}]}}
    start = time.perf_counter()
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=TOKENS,
                                           temperature=0, extra_body=extra)
    return reply.choices[0].message.content, reply.usage.completion_tokens, time.perf_counter() - start


def concurrent(client: OpenAI, coefs: list[float | None], workers: int = 16) -> tuple[float, int, list]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda c: ask(client, c), coefs))
    return time.perf_counter() - start, sum(r[1] for r in results), results


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy("runs/demo-pirate/vector.safetensors", Path(folder) / "pirate.safetensors")
        with running_server(load_model("smollm2-135m"), ServerSettings(port=0, vectors=Path(folder))) as served:
            client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
            coefs = [round(-2 + 4 * i / 15, 3) for i in range(16)]
            ask(client, 1.0)  # warm up
            serial_start = time.perf_counter()
            serial_tokens = sum(ask(client, c)[1] for c in coefs)
            serial_s = time.perf_counter() - serial_start
            batched_s, batched_tokens, _ = concurrent(client, coefs)
            rounds = [(concurrent(client, [None] * 16), concurrent(client, [1.0] * 16)) for _ in range(2)]  # interleaved
            plain = max(r[0][1] / r[0][0] for r in rounds)
            steered = max(r[1][1] / r[1][0] for r in rounds)
            load_coefs = [round(-2 + 4 * i / 199, 3) for i in range(200)]
            load_s, load_tokens, load = concurrent(client, load_coefs)
            latencies = sorted(r[2] for r in load)
            sample = list(range(0, 200, 200 // 32))[:32]
            same = sum(ask(client, load_coefs[i])[0] == load[i][0] for i in sample)
    rows = [
        {"serving": "16 requests one by one (16 coefficients)", "tokens/s": serial_tokens / serial_s, "ratio": 1.0, "target": ""},
        {"serving": "the same 16 concurrently (one batch, per-row coefficients)", "tokens/s": batched_tokens / batched_s,
         "ratio": (batched_tokens / batched_s) / (serial_tokens / serial_s), "target": ">= 3x"},
        {"serving": "16 concurrent, unsteered", "tokens/s": plain, "ratio": 1.0, "target": ""},
        {"serving": "16 concurrent, steered (coef 1.0)", "tokens/s": steered, "ratio": steered / plain, "target": ">= 0.97x"},
        {"serving": "load: 200 requests at concurrency 16", "tokens/s": load_tokens / load_s, "ratio": "",
         "target": f"p50 {statistics.median(latencies):.2f} s, p95 {latencies[int(0.95 * len(latencies)) - 1]:.2f} s, 0 errors; "
                   f"{same}/{len(sample)} sampled answers equal the request alone"},
    ]
    note = (f"Greedy, {TOKENS} new tokens per request, pirate vector at layer 9, `response` positions, openai client over 127.0.0.1; "
            "unsteered vs steered: best of 2 interleaved rounds.")
    print(write_section("server", "Persona server: batching across clients, steering cost, load (SmolLM2-135M)", rows, note))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
