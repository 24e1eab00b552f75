"""A LoRA at a lower rank: each module's delta truncated to its top singular directions.

llama.cpp's per-token cost of a LoRA grows with its rank; the truncated SVD of
dW = scaling * B @ A is the best rank-k approximation of each module's delta
(Eckart-Young), and the share of the squared Frobenius norm it keeps says what
the smaller adapter gives up.
"""

from __future__ import annotations

import math

import torch

from ..errors import OptionError
from .direction import LoRADirection, LoRAFactors, factor_svd


def lower_rank(direction: LoRADirection, rank: int) -> tuple[LoRADirection, float]:
    """(the adapter at `rank`, the share of the delta's energy kept), with the adapter's scaling semantics.

    Per module B' = U_k sqrt(S_k / s) and A' = sqrt(S_k / s) V_k^T, so s * B' @ A' is the rank-k truncated
    SVD of dW; s is the adapter's scaling (1 when its modules differ) and lora_alpha is set so that rank k
    keeps it. The energy kept is sum of the top-k squared singular values over all of them, all modules pooled.
    """
    if not 1 <= rank <= direction.rank:
        raise OptionError(f"--rank {rank} is outside 1..{direction.rank} (the adapter's rank)")
    scalings = {f.scaling for f in direction.modules.values()}
    scaling = scalings.pop() if len(scalings) == 1 else 1.0
    kept = total = 0.0
    modules = {}
    for name, factors in direction.modules.items():
        u, s, v = factor_svd(factors)
        kept += float((s[:rank] ** 2).sum())
        total += float((s**2).sum())
        root = (s[:rank] / scaling).sqrt()
        missing = rank - root.numel()  # a module whose delta has fewer than `rank` singular values
        b = torch.nn.functional.pad(u[:, :rank] * root, (0, missing))
        a = torch.nn.functional.pad((v[:, :rank] * root).T, (0, 0, 0, missing))
        modules[name] = LoRAFactors(a.to(factors.A.dtype).contiguous(), b.to(factors.B.dtype).contiguous(), scaling)
    energy = kept / total if total > 0 else 1.0
    rslora = bool(direction.config.get("use_rslora"))
    config = dict(direction.config, r=rank, lora_alpha=scaling * (math.sqrt(rank) if rslora else rank))
    metadata = dict(direction.metadata, lower_rank={"from_rank": direction.rank, "rank": rank, "energy_kept": energy})
    return LoRADirection(modules, config, metadata), energy


def energy_line(rank: int, energy: float) -> str:
    """The sentence every lower-rank export prints and stores."""
    return f"rank {rank} keeps {100 * energy:.2f}% of the delta's energy (squared Frobenius norm)"
