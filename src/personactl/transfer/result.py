"""What one persona's transfer measured: the value the runner returns and the report reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransferResult:
    """What one persona's transfer measured, and where the files are."""

    trait: str
    source_layer: int
    target_layer: int
    rows: list[dict[str, Any]]
    hypotheses: dict[str, dict[str, Any]]
    criteria: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
