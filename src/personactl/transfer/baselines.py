"""Maps from a source hidden size d_s to a target size d_t that a fitted ridge map must beat.

Vectors in, same kind out: a torch tensor gives a torch tensor (its device and floating dtype),
a numpy array gives a numpy array (float64 for integer input). Arithmetic is float64.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TransferError
from .ridge import Array, ArrayT, as_float64, checked_pairs, same_kind_as


def pad_or_truncate(v: ArrayT, d_t: int) -> ArrayT:
    """The first d_t coordinates of v, zero-padded: the 'same basis' guess; keeps the norm when d_t >= d_s."""
    v64 = _vector(v)
    out = torch.zeros(_size(d_t), dtype=torch.float64, device=v64.device)
    keep = min(len(v64), d_t)
    out[:keep] = v64[:keep]
    return same_kind_as(out, v)


def interpolate(v: ArrayT, d_t: int) -> ArrayT:
    """v resampled linearly at d_t evenly spaced points of its index range: the 'smooth in index' guess."""
    v64 = _vector(v).cpu().numpy()
    out = np.interp(np.linspace(0.0, 1.0, _size(d_t)), np.linspace(0.0, 1.0, len(v64)), v64)
    return same_kind_as(torch.from_numpy(out), v)


def random_orthogonal(d_s: int, d_t: int, seed: int = 0) -> np.ndarray:
    """A Haar-random [d_s, d_t] matrix with orthonormal rows (d_s <= d_t) or columns: the 'unrelated bases' map.

    With orthonormal rows, v @ Q keeps the norm of every v.
    """
    tall, short = max(_size(d_s), _size(d_t)), min(d_s, d_t)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((tall, short)))
    q *= np.sign(np.diag(r))  # the sign fix makes QR of a Gaussian exactly Haar-distributed
    return q if d_s >= d_t else q.T


def procrustes(X: ArrayT, Y: Array) -> ArrayT:
    """Orthogonal Procrustes [d_s, d_t]: the semi-orthogonal R minimising ||Xc R - Yc|| (R = U V^T of Xc^T Yc).

    The best map that only rotates (and embeds or projects): ridge's competitor when pairs are few.
    """
    x, y = checked_pairs(X, Y)
    u, _, vh = torch.linalg.svd((x - x.mean(0)).T @ (y - y.mean(0)), full_matrices=False)
    return same_kind_as(u @ vh, X)


def rescale(v: ArrayT, norm: float) -> ArrayT:
    """v scaled to length `norm`, e.g. to a typical activation norm of the target layer."""
    v64 = _vector(v)
    length = float(torch.linalg.vector_norm(v64))
    if length == 0:
        raise TransferError("cannot rescale a zero vector: it has no direction")
    return same_kind_as(v64 * (norm / length), v)


def random_cosine_null(oracle: Array, n: int = 1000, seed: int = 0) -> np.ndarray:
    """Cosines with `oracle` of n source vectors sent through random orthogonal maps: chance level of a transfer.

    v @ Q for a Haar-random Q (`random_orthogonal`) points in a uniformly random direction of the
    target space whatever v is, so the source vector is not needed: these are the cosines of n
    uniformly random directions with the oracle, sampled directly at O(n d_t).
    """
    target = _vector(oracle).cpu().numpy()
    length = np.linalg.norm(target)
    if length == 0:
        raise TransferError("the oracle vector is zero: cosines with it are undefined")
    g = np.random.default_rng(seed).standard_normal((_size(n), len(target)))
    return g @ target / (np.linalg.norm(g, axis=1) * length)


def _vector(v: Array) -> torch.Tensor:
    v64 = as_float64(v, "v")
    if v64.dim() != 1 or len(v64) == 0:
        raise TransferError(f"expected a non-empty 1-D vector; got shape {tuple(v64.shape)}")
    return v64


def _size(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise TransferError(f"sizes must be positive integers; got {d!r}")
    return int(d)
