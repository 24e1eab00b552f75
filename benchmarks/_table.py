"""Write one benchmark's rows as a section of docs/benchmarks.md (and JSON beside it)."""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def write_section(name: str, title: str, rows: list[dict], note: str = "", doc: Path = DOC, data: dict | None = None) -> Path:
    """Replace (or append) the section `name` in `doc` (docs/benchmarks.md); write docs/<doc stem>/<name>.json.

    `data` (settings, raw numbers) goes into the JSON beside the rows, so a test can recompute the section from it.
    """
    json_path = doc.parent / doc.stem / f"{name}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"rows": rows, "machine": machine(), **(data or {})}, indent=2) + "\n")
    headers = list(rows[0])
    lines = [f"<!-- {name} -->", f"## {title}", "", f"Machine: {machine()}", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(r[h]) for h in headers) + " |" for r in rows]
    lines += ([""] + [note] if note else []) + [f"<!-- /{name} -->"]
    section = "\n".join(lines)
    heading = "# Benchmarks\n\nRatios measured in one process, one run each; absolute times vary with the machine.\n"
    text = doc.read_text() if doc.exists() else (heading if doc == DOC else "# Experiments\n\nResults on the embedded model, one run each.\n")
    pattern = re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    doc.write_text(text)
    return doc


def best_of(fn, repeats: int = 3) -> float:
    """The shortest of `repeats` wall-clock timings of fn() (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
