"""Structure of a persona direction: singular values per module, effective rank, energy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .._plot import two_panels
from .direction import LoRADirection, singular_values


@dataclass(frozen=True)
class SVDRow:
    module: str
    rank: int
    effective_rank: float  # exp(entropy of the normalised singular values), Roy & Vetterli
    energy_top_k: float  # share of sum(s^2) in the top k
    largest: float
    values: tuple[float, ...]


def effective_rank(values: torch.Tensor) -> float:
    p = values / values.sum().clamp_min(1e-30)
    p = p[p > 0]
    return float(math.exp(-(p * p.log()).sum()))


def svd_table(direction: LoRADirection, top_k: int = 4) -> list[SVDRow]:
    """One row per adapted module, in the adapter's order."""
    rows = []
    for name, values in singular_values(direction).items():
        energy = values.double() ** 2
        rows.append(
            SVDRow(
                name,
                direction.modules[name].rank,
                effective_rank(values.double()),
                float(energy[:top_k].sum() / energy.sum().clamp_min(1e-30)),
                float(values[0]),
                tuple(values.tolist()),
            )
        )
    return rows


def plot_svd(rows: list[SVDRow], path: str | Path) -> Path:
    """Effective rank and top-k energy per module (x = module index, in layer order)."""
    return two_panels(
        path,
        "Persona direction dW: singular-value structure per module",
        range(len(rows)),
        ([r.effective_rank for r in rows], "effective rank"),
        ([r.energy_top_k for r in rows], "energy in top k"),
        "adapted module (in layer order)",
    )
