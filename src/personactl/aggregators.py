"""Ways to turn paired positive/negative activations into one direction per layer.

Each method is a pure function (pos, neg) -> [layers, hidden] taking tensors of
shape [n_pairs, layers, hidden] where row i of pos and row i of neg are a pair.
Every direction is sign-fixed so that positives project above negatives.
Directions from PCA and the probe are unit vectors scaled by the mean
difference's length along them, so coefficients mean the same across methods.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Aggregator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Difference of the class means (Chen et al.'s persona vector)."""
    return pos.mean(0) - neg.mean(0)


def _first_component(x: torch.Tensor) -> torch.Tensor:
    """First principal direction of each layer of x: [n, layers, hidden] -> [layers, hidden]."""
    centred = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred.transpose(0, 1).double(), full_matrices=False)
    return vh[:, 0, :].float()


def _scaled_along(unit: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Flip each unit direction so pos > neg, and scale it by the mean gap along it."""
    gap = ((pos.mean(0) - neg.mean(0)) * unit).sum(-1, keepdim=True)
    return unit * gap


def pca_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of the paired differences pos_i - neg_i."""
    diffs = pos - neg
    stacked = torch.cat([diffs, -diffs])  # symmetric, so the PC is not the mean offset
    return _scaled_along(_first_component(stacked), pos, neg)


def pca_centered(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of activations centred on their pair's mean."""
    centre = (pos + neg) / 2
    return _scaled_along(_first_component(torch.cat([pos - centre, neg - centre])), pos, neg)


def logistic(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Weights of a logistic-regression probe per layer (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - slow import

    units = []
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    for layer in range(pos.shape[1]):
        x = torch.cat([pos[:, layer], neg[:, layer]]).double().numpy()
        probe = LogisticRegression(C=1.0, max_iter=2000).fit(x, labels)
        w = torch.from_numpy(probe.coef_[0]).float()
        units.append(w / w.norm().clamp_min(1e-12))
    return _scaled_along(torch.stack(units), pos, neg)


METHODS: dict[str, Aggregator] = {
    "mean_diff": mean_diff,
    "pca_diff": pca_diff,
    "pca_centered": pca_centered,
    "logistic": logistic,
}


def separation(pos: torch.Tensor, neg: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Cohen's d of the projections of pos vs neg on each layer's direction: [layers]."""
    unit = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    p = (pos * unit).sum(-1)
    n = (neg * unit).sum(-1)
    pooled = ((p.var(0, unbiased=True) + n.var(0, unbiased=True)) / 2).sqrt() if len(pos) > 1 else torch.ones(p.shape[1])
    return (p.mean(0) - n.mean(0)) / pooled.clamp_min(1e-12)
