"""Persona adapters: switching cost vs reloading the model, and throughput base / unmerged / merged.

Run: PERSONACTL_ADAPTERS=runs/adapters .venv/bin/python benchmarks/adapter_swap.py --adapter pirate_coder
(`personactl adapter train --data src/personactl/data/personas/pirate_coder.jsonl --name pirate_coder` first.)
"""

from __future__ import annotations

import argparse
import time

from _table import write_section

from personactl import chat_prompt, generate, load_model, load_trait
from personactl.lora.adapters import PersonaSwitcher, resolve_adapter
from personactl.lora.direction import LoRADirection, merged

ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="pirate_coder")
    args = parser.parse_args()
    start = time.perf_counter()
    backbone = load_model("smollm2-135m")
    reload_seconds = time.perf_counter() - start
    folder = resolve_adapter(args.adapter)
    prompts = [chat_prompt(q) for q in load_trait("pirate").eval_questions[:8]]

    def tokens_per_second() -> float:
        start = time.perf_counter()
        generate(backbone, prompts, max_new_tokens=32, min_new_tokens=32, batch_size=len(prompts))
        return len(prompts) * 32 / (time.perf_counter() - start)

    best = {"base": 0.0, "adapter unmerged": 0.0, "adapter merged": 0.0}
    with PersonaSwitcher(backbone) as switch:
        switch.load(args.adapter, folder)
        start = time.perf_counter()
        for _ in range(500):
            switch.use(None)
            switch.use(args.adapter)
        swap_seconds = (time.perf_counter() - start) / 1000
        for _ in range(ROUNDS + 1):  # round 0 warms up; modes interleaved
            switch.use(None)
            best["base"] = max(best["base"], tokens_per_second())
            switch.use(args.adapter)
            best["adapter unmerged"] = max(best["adapter unmerged"], tokens_per_second())
            switch.use(None)
            with merged(backbone, (LoRADirection.load(folder), 1.0)):
                best["adapter merged"] = max(best["adapter merged"], tokens_per_second())
    rows = [{"mode": mode, "tokens/s": tps, "ratio to base": tps / best["base"]} for mode, tps in best.items()]
    note = (
        f"Switching persona (use(None) <-> use(name)): {1000 * swap_seconds:.3f} ms per switch; "
        f"reloading the model instead: {reload_seconds:.1f} s ({reload_seconds / swap_seconds:,.0f}x). "
        "8 prompts x 32 forced tokens, best of 3 interleaved rounds."
    )
    print(write_section("adapter_swap", f"Persona adapter '{args.adapter}': swap cost and throughput (SmolLM2-135M)", rows, note))
    for r in rows:
        print(r)
    print(note)


if __name__ == "__main__":
    main()
