"""llama.cpp backend throughput: HF fp32 vs llama.cpp (Q4 GGUF), and the cost of a control vector and of a GGUF LoRA;
plus the judged trait of the same vector at the same coefficients on both backends (one sweep, offline judge).

Run (on a quiet machine): .venv/bin/python benchmarks/llamacpp_backend.py
  --vector runs/demo-pirate/vector.safetensors (its pairs feed the judge) --lora runs/lora-pirate/diff
Batch 1, 64 forced new tokens per answer (end-of-text ignored), repeats interleaved, best of each kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _table import write_section

from personactl import chat_prompt, load_model, load_trait, load_vector
from personactl.blackbox import Control, LlamaCppBackend, lora_gguf
from personactl.generation import generate

NEW_TOKENS = 64
LORA_COST = " The GGUF LoRA's cost is llama.cpp's own: each adapted weight (here 7 projections x 30 blocks) adds two small matmuls, a scale and an add per token, which at batch 1 on a 135M model is ~25%, above the 8% target; a persona at a fixed scale can be merged into the GGUF instead (`personactl export gguf-merged`; measured against rank, targets and lower-rank exports by benchmarks/gguf_lora_cost.py)."


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, default=Path("runs/demo-pirate/vector.safetensors"))
    parser.add_argument("--lora", default="runs/lora-pirate/diff", help="LoRA direction folder (converted to a GGUF LoRA)")
    parser.add_argument("--layer", type=int, default=None, help="[default: the run's chosen layer (layers.json), else 20]")
    parser.add_argument("--coef", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpp-repeats", type=int, default=3, help="llama.cpp rounds per repeat")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument(
        "--trait-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also sweep vector vs llamacpp-vector on pirate and compare the judged trait",
    )
    parser.add_argument("--questions", type=int, default=12)
    args = parser.parse_args()

    layers_file = args.vector.parent / "layers.json"
    layer = args.layer or (json.loads(layers_file.read_text())["chosen"] if layers_file.exists() else 20)
    backbone = load_model("smollm2-135m")
    vector = load_vector(args.vector, backbone=backbone)
    backend = LlamaCppBackend("smollm2-135m", n_ctx=1024)
    prompts = [chat_prompt(q) for q in load_trait("pirate").eval_questions[: args.prompts]]
    control = [Control(vector, layer, args.coef)]  # set once around the prompts, as the LoRA
    lora_path, lora_note = None, ""
    try:
        lora_path = lora_gguf(args.lora, backend, backbone)
        backend.load_lora(lora_path)
    except Exception as exc:  # noqa: BLE001 - measure the rest and say why
        lora_note = f" GGUF LoRA not measured: {exc}."

    def hf() -> None:
        for p in prompts:
            generate(backbone, [p], max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)

    def cpp(**kwargs) -> None:
        for p in prompts:
            backend.generate([p], max_new_tokens=NEW_TOKENS, forced=True, **kwargs)

    def cpp_lora() -> None:
        with backend.steered(loras=[(lora_path, 1.0)]):
            cpp()

    def cpp_control() -> None:
        with backend.steered(*control):
            cpp()

    modes = {"HF fp32 (hooks off)": hf, "llama.cpp Q4_1": cpp, "llama.cpp + control vector": cpp_control}
    if lora_path is not None:
        modes["llama.cpp + GGUF LoRA"] = cpp_lora
    for fn in modes.values():  # warm up: first calls allocate
        fn()
    best = {name: float("inf") for name in modes}
    raw: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for inner in range(args.cpp_repeats):  # llama.cpp is cheap: more interleaved rounds of its modes
            for name, fn in modes.items():
                if inner and name.startswith("HF"):
                    continue
                t = timed(fn)
                raw[name].append(t)
                best[name] = min(best[name], t)
    n_tokens = NEW_TOKENS * len(prompts)
    speed = {name: n_tokens / t for name, t in best.items()}
    cpp_speed = speed["llama.cpp Q4_1"]
    median = {name: float(np.median(ts)) for name, ts in raw.items()}
    rows = [
        {
            "mode": name,
            "tokens/s": round(s, 1),
            "vs HF fp32": round(s / speed["HF fp32 (hooks off)"], 2),
            "cost vs llama.cpp (best)": ("-" if not name.startswith("llama.cpp +") else f"{100 * (cpp_speed / s - 1):+.1f}%"),
            "cost (median)": ("-" if not name.startswith("llama.cpp +") else f"{100 * (median[name] / median['llama.cpp Q4_1'] - 1):+.1f}%"),
            "runs": len(raw[name]),
        }
        for name, s in speed.items()
    ]

    trait_numbers, trait_note = [], " Judged-trait comparison not run (--no-trait-check)."
    if args.trait_check:
        trait_numbers, trait_note = trait_check(backbone, args.vector, layer, args.questions)
    note = (
        f"SmolLM2-135M-Instruct, batch 1, {len(prompts)} pirate questions x {NEW_TOKENS} forced new tokens (prefill included), "
        f"best of interleaved repeats (runs column; median too), {torch.get_num_threads()} threads for both engines. HF runs the de-quantized "
        f"fp32 weights; llama.cpp the Q4_1 GGUF. Control vector: {vector.trait} at layer {layer}, coef {args.coef:g}. "
        + (f"GGUF LoRA: {args.lora} (rank {_rank(args.lora)}, scale 1)." + LORA_COST if lora_path is not None else "")
        + lora_note
        + trait_note
    )
    print(
        write_section(
            "llamacpp_backend",
            "llama.cpp backend: throughput and steering cost (SmolLM2-135M)",
            rows,
            note,
            data={"raw_seconds": raw, "tokens": n_tokens, "layer": layer, "coef": args.coef, "trait": trait_numbers},
        )
    )
    for r in rows:
        print(r)
    print(note)


def _rank(folder: str) -> str:
    try:
        from personactl.lora.direction import LoRADirection  # noqa: PLC0415

        return str(LoRADirection.load(folder).rank)
    except Exception:  # noqa: BLE001
        return "?"


def trait_check(backbone, vector_path: Path, layer: int, n_questions: int) -> tuple[list[dict], str]:
    """One sweep with methods vector and llamacpp-vector: same questions, coefficients and judge."""
    from personactl.evaluate import validate_config  # noqa: PLC0415
    from personactl.experiment import run  # noqa: PLC0415

    coefs = [0.0, 1.0, 2.0]
    config = validate_config(
        {
            "name": "llamacpp-vs-hf",
            "vector": str(vector_path),
            "methods": ["vector", "llamacpp-vector"],
            "layers": [layer],
            "coefs": coefs,
            "n_questions": n_questions,
            "max_new_tokens": 48,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        result = run(config, out, backbone=backbone, report=False)
    by = {(r["method"], r["coef"]): r for r in result.summary}
    parts, disagree, numbers = [], [], []
    for coef in coefs:
        hf, cpp = by[("vector", coef)], by[("llamacpp-vector", coef)]
        if not (hf["trait_lo"] <= cpp["trait_hi"] and cpp["trait_lo"] <= hf["trait_hi"]):
            disagree.append(f"{coef:g}")
        parts.append(
            f"coef {coef:g}: HF {hf['trait_mean']:.1f} [{hf['trait_lo']:.1f}, {hf['trait_hi']:.1f}] vs "
            f"llama.cpp {cpp['trait_mean']:.1f} [{cpp['trait_lo']:.1f}, {cpp['trait_hi']:.1f}]"
        )
        numbers.append(
            {
                "coef": coef,
                "hf": [hf["trait_mean"], hf["trait_lo"], hf["trait_hi"]],
                "llamacpp": [cpp["trait_mean"], cpp["trait_lo"], cpp["trait_hi"]],
            }
        )
    verdict = "the 95% CIs overlap at every coefficient" if not disagree else f"the 95% CIs do not overlap at coef {', '.join(disagree)}"
    return numbers, (
        f" Judged trait of the same vector through both backends (one sweep: methods vector and llamacpp-vector, "
        f"offline embed judge, {n_questions} held-out pirate questions, greedy, 48 tokens, layer {layer}, bootstrap "
        f"95% CIs): {'; '.join(parts)}; {verdict}."
    )


if __name__ == "__main__":
    main()
