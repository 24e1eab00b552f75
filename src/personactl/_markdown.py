"""Markdown tables for the reports that several capabilities write (transfer, safety)."""

from __future__ import annotations

from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1000 or (value and abs(value) < 0.01) else f"{value:.2f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]) -> str:
    """A pipe table of `rows` (dicts) with `columns` as its header; floats kept short."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
