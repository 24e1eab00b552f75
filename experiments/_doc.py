"""Shared by the experiments: the pirate set-up on SmolLM2, and writing a section of docs/experiments.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _table  # noqa: E402

DOC = _table.ROOT / "docs" / "experiments.md"


def write_section(name: str, title: str, rows: list[dict], note: str = "", data: dict | None = None) -> Path:
    """Write a section of docs/experiments.md and docs/experiments/<name>.json (rows, machine and `data`)."""
    return _table.write_section(name, title, rows, note, doc=DOC, data=data)


def pirate_setup(direction_dir: Path):
    """(backbone, trait, usable contrastive pairs, offline judge fitted on them) from a `lora extract` folder."""
    from personactl import load_model, load_pairs, load_trait
    from personactl.extraction import question_groups
    from personactl.judges.embedding import EmbeddingJudge

    pairs = [p for p in load_pairs(direction_dir / "pairs.jsonl") if p.pos_answer.strip() and p.neg_answer.strip()]
    judge = EmbeddingJudge.fit([p.pos_answer for p in pairs], [p.neg_answer for p in pairs], trait="pirate", groups=question_groups(pairs))
    return load_model("smollm2-135m"), load_trait("pirate"), pairs, judge
