"""`personactl bench` on the embedded models: which method moves each persona best, at what cost.

For each model in --models, every built-in trait (or --traits) is benched with the default methods and budget
(`BenchConfig`), in runs/bench-<model>/ (a killed run resumes there). The model's leaderboard, the time the whole
bench took and its settings replace the model's section of docs/benchmark.md, so one model can be re-run alone.

Run: OMP_NUM_THREADS=2 .venv/bin/python experiments/bench.py [--models smollm2-135m,gemma3-270m] [--traits pirate,silly]
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import torch

from personactl import BenchConfig, load_model, run_bench, write_bench_report
from personactl.bench import bench_markdown
from personactl.traits import builtin_traits

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmark.md"
HEADER = """# Method bench: which method moves a persona best, at what cost

`personactl bench` on the embedded models, written by `experiments/bench.py`. Each method's strength is tuned on
held-out extraction questions (the largest mean trait whose mean coherence stays at or above the floor), then every
method answers the same evaluation questions once with the same seeds and judge. `combined` is the per-answer
harmonic mean of trait, coherence and relevance (0-100), averaged by question; intervals are 95% Student's t over
questions; pairs of methods are compared by question with Holm's correction per trait (see docs/bench.md).
`speed` is generated tokens per second relative to the plain model, read from the one scoring batch of each
method (12 answers), so it is coarse: methods that add no work (cap, vector) land between 0.6x and 1.3x; few-shot's long
prompts are the one cost it shows clearly, and llama.cpp's speed is its own engine's, not the cost of steering; `set-up s` is extraction, layer choice and training as the
method needs them, plus its tuning generations. The offline judge (embedding classifier, repetition coherence,
embedding relevance) is coarse: read the intervals, not the point estimates.
"""


def section(model: str, body: str) -> str:
    return f"<!-- bench:{model} -->\n{body}<!-- /bench:{model} -->\n"


def write_section(model: str, body: str) -> None:
    """Replace (or append) the model's section of docs/benchmark.md."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    new = section(model, body)
    pattern = re.compile(rf"<!-- bench:{re.escape(model)} -->\n.*?<!-- /bench:{re.escape(model)} -->\n", re.S)
    text = pattern.sub(lambda _: new, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + new
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m", help="comma-separated model aliases (default: both embedded models)")
    parser.add_argument("--traits", default=None, help="comma-separated traits (default: every built-in trait)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder for the bench folders (default: runs)")
    args = parser.parse_args()
    traits = args.traits.split(",") if args.traits else builtin_traits()
    for model in args.models.split(","):
        config = BenchConfig(model=model, traits=traits)
        started = time.perf_counter()
        backbone = load_model(model)
        result = run_bench(config, args.out / f"bench-{model}", backbone)
        report = write_bench_report(result)
        minutes = (time.perf_counter() - started) / 60
        machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
        settings = ", ".join(f"{k} {v}" for k, v in config.model_dump().items() if k not in ("model", "traits"))
        body = (
            f"## {model}\n\nThe whole bench took {minutes:.0f} min on {machine} (model load, extraction, training, tuning "
            f"and scoring of every trait; a resumed run counts only what it redid). Settings: {settings}.\n\n"
            f"{bench_markdown(report, heading='###')}"
        )
        write_section(model, body)
        print(f"{model}: {minutes:.0f} min; {DOC}")


if __name__ == "__main__":
    main()
