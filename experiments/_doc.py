"""Write an experiment's table as a section of docs/experiments.md (the benchmarks' writer, another file)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _table  # noqa: E402


def write_section(name: str, title: str, rows: list[dict], note: str = "") -> Path:
    return _table.write_section(name, title, rows, note, doc=_table.ROOT / "docs" / "experiments.md")
