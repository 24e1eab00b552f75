"""Ridge map from a source model's activations to a target model's, penalty chosen by cross-validation.

Row i of X [n, d_s] and Y [n, d_t] is the same text read by the source and the target
model. `fit_ridge` solves W = argmin ||Yc - Xc W||^2 + lam ||W||^2 on centred rows (so
the intercept is not penalised) and picks lam from a grid by exact leave-one-out error,
the criterion of scikit-learn's RidgeCV (same errors, same choice), or by k-fold.

One eigen-decomposition of the smaller Gram matrix serves every lambda, and the
leave-one-out errors of the whole grid cost five n-by-d-by-d products in all plus O(n d)
per lambda (see `_Fits`), where RidgeCV pays two such products per lambda. Arithmetic is
float64 torch on the device of the input tensors; the fitted map lives on the CPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._io import atomic_path
from ..errors import TransferError

Array = np.ndarray | torch.Tensor
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)  # a result of the same kind as the input
DEFAULT_LAMBDAS = (0.01, 0.1, 1.0, 10.0)
MIN_ROWS = 3
_FORMAT = "personactl.ridge_map"


@dataclass
class RidgeMap:
    """Affine map y = (x - x_mean) @ weight + y_mean from source to target activations.

    `scores[lam]` holds the selection error ("loo_mse" or "cv_mse", mean over rows and
    target dimensions) and, with a held-out split, "r2" and "cosine" (see `fit_ridge`).
    """

    weight: torch.Tensor  # [d_s, d_t] float64
    x_mean: torch.Tensor  # [d_s]
    y_mean: torch.Tensor  # [d_t]
    lam: float
    scores: dict[float, dict[str, float]] = field(default_factory=dict)

    @property
    def bias(self) -> torch.Tensor:
        """Intercept b of y = x @ weight + b."""
        return self.y_mean - self.x_mean @ self.weight

    def predict(self, x: ArrayT) -> ArrayT:
        """Target activations for source activations x [..., d_s], in x's array type and dtype."""
        x64 = self._source(x, "x")
        w, x_mean, y_mean = (a.to(x64.device) for a in (self.weight, self.x_mean, self.y_mean))
        return same_kind_as((x64 - x_mean) @ w + y_mean, x)

    def map_direction(self, v: ArrayT) -> ArrayT:
        """v @ weight, the linear part only: a steering direction is a difference, so the intercept cancels."""
        v64 = self._source(v, "v")
        return same_kind_as(v64 @ self.weight.to(v64.device), v)

    def save(self, path: str | Path) -> Path:
        """Write the map atomically as safetensors (float64 tensors; lambda and scores as JSON in the header)."""
        path = Path(path)
        tensors = {"weight": self.weight, "x_mean": self.x_mean, "y_mean": self.y_mean}
        meta = {
            "format": _FORMAT,
            "lam": repr(self.lam),
            "scores": json.dumps({repr(lam): s for lam, s in self.scores.items()}),
        }
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RidgeMap:
        """Read a map written by `save`."""
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise TransferError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from exc
        if meta.get("format") != _FORMAT:
            raise TransferError(f"{path} is not a personactl ridge map (its format is {meta.get('format')!r})")
        scores = {float(lam): s for lam, s in json.loads(meta["scores"]).items()}
        return cls(tensors["weight"], tensors["x_mean"], tensors["y_mean"], float(meta["lam"]), scores)

    def _source(self, a: Array, name: str) -> torch.Tensor:
        a64 = as_float64(a, name)
        if a64.dim() == 0 or a64.shape[-1] != self.weight.shape[0]:
            raise TransferError(f"{name} has shape {tuple(a64.shape)} but this map takes source vectors of size {self.weight.shape[0]}")
        return a64


def fit_ridge(
    X: Array,
    Y: Array,
    lambdas: Sequence[float] | float = DEFAULT_LAMBDAS,
    cv: str | int = "loo",
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> RidgeMap:
    """Ridge map from X [n, d_s] to Y [n, d_t] (numpy or torch), fitted on all rows with the best lambda.

    cv="loo": exact leave-one-out squared error; the errors, the chosen lambda (ties go to the
    first in the grid), the weight and the intercept are those of
    sklearn.linear_model.RidgeCV(alphas=lambdas). cv=k: k-fold over a shuffle seeded by `seed`.
    heldout_fraction > 0 adds, per lambda, "r2" and "cosine" (mean over rows) on a seeded held-out
    split predicted by a map fitted on the other rows (see `_heldout_report`). It is a report only:
    those rows still take part in the choice of lambda and in the final fit.
    """
    x, y = checked_pairs(X, Y)
    lams = _checked_lambdas(lambdas)
    n_test = _checked_heldout(heldout_fraction, len(x))
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    spectrum = _Spectrum.of(xc, yc)
    if cv == "loo":
        name, errors = "loo_mse", _loo_mse(spectrum, xc, yc, lams)
    else:
        name, errors = "cv_mse", _kfold_mse(x, y, lams, _checked_folds(cv, len(x)), seed)
    report = _heldout_report(x, y, lams, n_test, seed) if n_test else [{} for _ in lams]
    best = min(range(len(lams)), key=errors.__getitem__)
    scores = {lam: {name: err, **extra} for lam, err, extra in zip(lams, errors, report)}
    return RidgeMap(spectrum.weight(lams[best]).cpu(), x_mean.cpu(), y_mean.cpu(), lams[best], scores)


@dataclass(frozen=True)
class _Spectrum:
    """Centred X = U diag(s) V^T from the eigen-decomposition of its smaller Gram matrix.

    Holds s2 = s^2 (ascending; numerically zero ones dropped), V [d_s, r] and
    C = V^T Xc^T Yc [r, d_t]: the ridge weight for any lambda is V diag(1 / (s2 + lam)) C.
    """

    s2: torch.Tensor
    v: torch.Tensor
    c: torch.Tensor

    @classmethod
    def of(cls, xc: torch.Tensor, yc: torch.Tensor) -> _Spectrum:
        n, p = xc.shape
        s2, vecs = _eigh(xc.T @ xc if n >= p else xc @ xc.T)
        keep = s2 > s2[-1] * max(n, p) * torch.finfo(s2.dtype).eps
        s2, vecs = s2[keep], vecs[:, keep]
        if n >= p:
            return cls(s2, vecs, vecs.T @ (xc.T @ yc))
        s = s2.sqrt()  # vecs = U: V = Xc^T U / s and C = diag(s) U^T Yc
        return cls(s2, (xc.T @ vecs) / s, (vecs * s).T @ yc)

    def weight(self, lam: float) -> torch.Tensor:
        return self.v @ (self.c / (self.s2 + lam)[:, None])


def _eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and eigenvectors of a symmetric matrix.

    On the CPU up to 2048 rows LAPACK runs on one thread: its tridiagonal reduction is
    memory-bound, and threaded it stalled for seconds on a busy 2-core machine
    (d = 576: 0.08 s on one thread; d = 1024: 0.3 s on one, 15 s on two).
    """
    if gram.device.type != "cpu" or len(gram) > 2048:
        return torch.linalg.eigh(gram)
    with _torch_threads(1):
        return torch.linalg.eigh(gram)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Fits:
    """Per-row ||F_i||^2 and F_i . T_i of the ridge fits F = Z diag(d) C, every lambda at O(r) per row.

    Z [m, r] are rows of centred X in the eigenbasis (Z = Xc V), T [m, d_t] the targets they are
    compared with, d_j = 1 / (s2_j + lam). F_i . T_i = sum_j d_j Z_ij (T C^T)_ij is linear in d;
    ||F_i||^2 = sum_jk d_j d_k Z_ij Z_ik K_jk (K = C C^T) becomes linear in d once
    d_j d_k = (d_j - d_k) / (s2_k - s2_j) (partial fractions), so one m-by-r-by-r product serves
    every lambda. Pairs of nearly equal eigenvalues, where that division would lose digits, are
    summed directly.
    """

    def __init__(self, spectrum: _Spectrum, z: torch.Tensor, targets: torch.Tensor, lam_max: float):
        s2, c = spectrum.s2, spectrum.c
        k = c @ c.T
        near = _near_pairs(s2, lam_max)
        far_k = torch.where(near, 0.0, k / torch.where(near, 1.0, s2[None, :] - s2[:, None]))
        self.z2 = z.square()
        self.zm = (targets @ c.T).mul_(z)
        self.zp = (z @ (2 * far_k.T)).mul_(z)
        self.k_diag = k.diagonal()
        self.grouped = (near.sum(1) > 1).nonzero().squeeze(1)  # eigenvalues sharing a run with another
        self.z_near = z[:, self.grouped]
        self.k_near = (k * near)[self.grouped][:, self.grouped].fill_diagonal_(0.0)

    def dots(self, d: torch.Tensor) -> torch.Tensor:
        return self.zm @ d

    def norms(self, d: torch.Tensor) -> torch.Tensor:
        zd = self.z_near * d[self.grouped]
        return self.zp @ d + self.z2 @ (d * d * self.k_diag) + ((zd @ self.k_near) * zd).sum(1)


def _near_pairs(s2: torch.Tensor, lam_max: float, rel_gap: float = 1e-3) -> torch.Tensor:
    """[r, r] bool: eigenvalues in one run of gaps below rel_gap * (level + lam_max).

    Outside a run, the partial fractions of `_Fits` amplify rounding by about 1 / rel_gap at most.
    """
    close = s2[1:] - s2[:-1] < rel_gap * ((s2[1:] + s2[:-1]) / 2 + lam_max)
    starts = torch.cat([torch.ones_like(s2[:1], dtype=torch.bool), ~close])
    run = torch.cumsum(starts, 0)
    return run[:, None] == run[None, :]


def _loo_mse(spectrum: _Spectrum, xc: torch.Tensor, yc: torch.Tensor, lambdas: list[float]) -> list[float]:
    """Exact leave-one-out mean squared error for each lambda (RidgeCV's default criterion).

    Row i's leave-one-out residual is e_i / (1 - h_i): e = Yc - F is the residual of the fit on
    all rows and h_i = 1/n + sum_j d_j Z_ij^2 its leverage (1/n: the unpenalised intercept, as sklearn).
    """
    n, t = yc.shape
    fits = _Fits(spectrum, xc @ spectrum.v, yc, max(lambdas))
    y2 = torch.linalg.vector_norm(yc, dim=1).square()
    errors = []
    for lam in lambdas:
        d = 1.0 / (spectrum.s2 + lam)
        residual2 = y2 - 2 * fits.dots(d) + fits.norms(d)
        errors.append(float((residual2 / (1.0 - 1.0 / n - fits.z2 @ d).square()).sum()) / (n * t))
    return errors


def _kfold_mse(x: torch.Tensor, y: torch.Tensor, lambdas: list[float], k: int, seed: int) -> list[float]:
    """Mean squared error of each lambda over k folds of a seeded shuffle, each fold predicted by the rest."""
    sse = [0.0] * len(lambdas)
    for test in np.array_split(np.random.default_rng(seed).permutation(len(x)), k):
        s2, fits, truth = _fit_without(x, y, torch.as_tensor(test, device=x.device), max(lambdas))
        t2 = float(truth.square().sum())
        for i, lam in enumerate(lambdas):
            d = 1.0 / (s2 + lam)
            sse[i] += t2 + float((fits.norms(d) - 2 * fits.dots(d)).sum())
    return [s / y.numel() for s in sse]


def _heldout_report(x: torch.Tensor, y: torch.Tensor, lambdas: list[float], n_test: int, seed: int) -> list[dict[str, float]]:
    """Per lambda, R^2 and mean row cosine of n_test seeded held-out rows, predicted by a fit on the other rows.

    R^2 pools the target dimensions (1 - SSE / SST). Cosines compare prediction and truth minus
    the training mean of Y, i.e. (x_i - mean x) W against y_i - mean y: raw activations share a
    large mean direction that would put every row's cosine near 1 whatever the map.
    """
    test = torch.as_tensor(np.random.default_rng(seed).permutation(len(x))[:n_test], device=x.device)
    s2, fits, truth = _fit_without(x, y, test, max(lambdas))
    t2 = truth.square().sum(1)
    sst = float(t2.sum() - n_test * truth.mean(0).square().sum())
    report = []
    for lam in lambdas:
        d = 1.0 / (s2 + lam)
        dots, norms = fits.dots(d), fits.norms(d).clamp_min(0.0)
        cosine = dots / (t2 * norms).sqrt().clamp_min(1e-12)
        sse = float((t2 - 2 * dots + norms).sum())
        report.append({"r2": 1.0 - sse / sst if sst > 0 else float("nan"), "cosine": float(cosine.mean())})
    return report


def _fit_without(x: torch.Tensor, y: torch.Tensor, test: torch.Tensor, lam_max: float) -> tuple[torch.Tensor, _Fits, torch.Tensor]:
    """Spectrum of the rows not in `test`, and the ridge fits of the `test` rows against y - training mean."""
    train = torch.ones(len(x), dtype=torch.bool, device=x.device)
    train[test] = False
    x_mean, y_mean = x[train].mean(0), y[train].mean(0)
    spectrum = _Spectrum.of(x[train] - x_mean, y[train] - y_mean)
    truth = y[test] - y_mean
    return spectrum.s2, _Fits(spectrum, (x[test] - x_mean) @ spectrum.v, truth, lam_max), truth


def checked_pairs(X: Array, Y: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y as float64 tensors on X's device, refusing shapes and values no map can be fitted on."""
    x = as_float64(X, "X")
    y = as_float64(Y, "Y").to(x.device)
    if x.dim() != 2 or y.dim() != 2 or 0 in x.shape or 0 in y.shape:
        raise TransferError(f"X and Y must be 2-D [rows, hidden] and non-empty; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) != len(y):
        raise TransferError(f"X has {len(x)} rows but Y has {len(y)}: row i of both must be the same text read by the two models")
    if len(x) < MIN_ROWS:
        raise TransferError(f"need at least {MIN_ROWS} paired rows to fit and cross-validate a map; got {len(x)}")
    for name, a in (("X", x), ("Y", y)):
        bad = (~torch.isfinite(a)).any(1).nonzero()
        if len(bad):
            raise TransferError(f"{name} holds NaN or infinite values ({len(bad)} rows, first row {int(bad[0])}): drop those pairs")
    return x, y


def _checked_lambdas(lambdas: Sequence[float] | float) -> list[float]:
    try:
        lams = [float(lam) for lam in np.atleast_1d(np.asarray(lambdas, dtype=np.float64))]
    except (TypeError, ValueError) as exc:
        raise TransferError(f"lambdas must be numbers; got {lambdas!r}") from exc
    if not lams or not all(math.isfinite(lam) and lam > 0 for lam in lams):
        raise TransferError(f"lambdas must be positive and finite (the penalty keeps the solve stable); got {lams}")
    return lams


def _checked_heldout(fraction: float, n: int) -> int:
    """Number of held-out rows for `fraction` of n (0 for none); both sides need 2 rows."""
    if not 0 <= fraction < 1:
        raise TransferError(f"heldout_fraction must be in [0, 1); got {fraction}")
    n_test = round(n * fraction)
    if fraction and (n_test < 2 or n - n_test < 2):
        raise TransferError(
            f"heldout_fraction={fraction} of {n} rows leaves {n_test} held out and {n - n_test} to fit;"
            " both need 2 rows: add pairs or pass heldout_fraction=0"
        )
    return n_test


def _checked_folds(cv: object, n: int) -> int:
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or not 2 <= cv <= n:
        raise TransferError(f"cv must be 'loo' or a number of folds from 2 to the {n} rows; got {cv!r}")
    return int(cv)


def as_float64(a: Array, name: str) -> torch.Tensor:
    """a as a float64 tensor, without a copy when it already is one (torch tensors keep their device)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64)
    try:
        array = np.ascontiguousarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TransferError(f"{name} must be a numeric array or tensor; got {type(a).__name__}") from exc
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def same_kind_as(result: torch.Tensor, ref: ArrayT) -> ArrayT:
    """result as ref's kind of array, in ref's floating dtype (float64 for integer input) and device."""
    if isinstance(ref, torch.Tensor):
        return result.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else torch.float64)
    dtype = np.asarray(ref).dtype
    return result.cpu().numpy().astype(dtype if np.issubdtype(dtype, np.floating) else np.float64, copy=False)
