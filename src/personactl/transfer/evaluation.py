"""Steer the target model with many vectors at once and score what it says.

A *cell* is one (method, layer, coefficient) condition. All cells run in one
batched generation: each cell's vector is its own steering term whose
per-row coefficient is zero outside the cell's rows, so every method,
coefficient and layer shares the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..generation import chat_prompt, generate
from ..intervals import mean_ci
from ..judges.base import Judges
from ..judges.text import is_collapsed
from ..models import Backbone
from ..progress import progress_bar
from ..steering import SteeringTerm
from ..verdicts import Cell as VerdictCell
from ..verdicts import Verdict, verdict_for


@dataclass(frozen=True)
class Cell:
    """One steering condition: `vector` [hidden] added at `layer` with `coef` (no vector = unsteered)."""

    method: str
    layer: int
    coef: float
    vector: torch.Tensor | None = None
    group: str = "main"

    @property
    def key(self) -> str:
        return f"{self.group}/{self.method}/L{self.layer}/{self.coef:g}"


def generate_cells(
    backbone: Backbone,
    questions: Sequence[str],
    cells: Sequence[Cell],
    *,
    max_new_tokens: int = 40,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Answers to every question under every cell, from one batched generation: {cell key: answers}."""
    rows = [(c, q) for c in cells for q in questions]
    terms = []
    for cell in cells:
        if cell.vector is None or cell.coef == 0:
            continue
        coefs = torch.tensor([cell.coef if c is cell else 0.0 for c, _ in rows])
        terms.append(SteeringTerm(cell.vector, cell.layer, coefs))
    with progress_bar(f"generating {len(cells)} conditions x {len(questions)} questions", len(rows)) as advance:
        answers = generate(
            backbone,
            [chat_prompt(q) for _, q in rows],
            steering=terms,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            on_batch=advance,
        )
    out: dict[str, list[str]] = {}
    for (cell, _), answer in zip(rows, answers):
        out.setdefault(cell.key, []).append(answer)
    return out


def score_cells(judges: Judges, questions: Sequence[str], cells: Sequence[Cell], answers: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Trait, coherence and collapse rate per cell with t CIs over questions, and the per-answer scores behind them.

    `questions` numbers each answer's question (a question asked twice is one question: its answers are averaged
    before any interval or test).
    """
    number = {q: i for i, q in enumerate(dict.fromkeys(questions))}
    ids = [number[q] for q in questions]
    rows = []
    for cell in cells:
        said = answers[cell.key]
        trait = judges.trait.score(list(questions), said)
        coherence = judges.coherence.score(list(questions), said)
        collapsed = [float(is_collapsed(a)) for a in said]
        (t, t_lo, t_hi), (c, c_lo, c_hi) = mean_ci(trait, ids), mean_ci(coherence, ids)
        rows.append(
            {
                "group": cell.group,
                "method": cell.method,
                "layer": cell.layer,
                "coef": cell.coef,
                "applied_norm": float(cell.vector.norm()) * abs(cell.coef) if cell.vector is not None else 0.0,
                "trait": t,
                "trait_lo": t_lo,
                "trait_hi": t_hi,
                "coherence": c,
                "coherence_lo": c_lo,
                "coherence_hi": c_hi,
                "collapse_rate": mean_ci(collapsed, ids)[0],
                "n": len(said),
                "example": said[0] if said else "",
                "trait_scores": trait,
                "coherence_scores": coherence,
                "collapsed": collapsed,
                "questions": ids,
            }
        )
    return rows


def verdict_of(rows: Sequence[dict[str, Any]], label: str, layer: int, expressed: bool | None = None) -> Verdict:
    """The shared verdict (verdicts.py) for rows of one vector over coefficients, as `evaluate_vector` returns them."""
    cells = [
        VerdictCell(
            r["coef"], r["trait"], r["trait_lo"], r["trait_hi"], r["coherence"], {i: s for i, s in enumerate(r["trait_scores"]) if s is not None}
        )
        for r in rows
    ]
    return verdict_for(label, layer, cells, expressed)


def evaluate_vector(
    backbone: Backbone,
    vector: torch.Tensor,
    layer: int,
    coefs: Sequence[float],
    questions: Sequence[str],
    judges: Judges,
    *,
    max_new_tokens: int = 40,
    batch_size: int = 32,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Trait, coherence and collapse of `vector` [hidden] at `layer` over `coefs` (0 = unsteered)."""
    cells = [Cell("vector", layer, float(c), vector) if c else Cell("unsteered", layer, 0.0) for c in coefs]
    answers = generate_cells(backbone, questions, cells, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    return score_cells(judges, questions, cells, answers)
