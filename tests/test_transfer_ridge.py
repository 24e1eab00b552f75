import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp
from sklearn.linear_model import Ridge, RidgeCV

from personactl.errors import PersonactlError, TransferError
from personactl.transfer.baselines import (
    interpolate,
    pad_or_truncate,
    procrustes,
    random_cosine_null,
    random_orthogonal,
    rescale,
)
from personactl.transfer.ridge import RidgeMap, fit_ridge

GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def _pairs(n, d_s, d_t, noise, seed=0):
    """Activation-like X (uneven scales, an offset) and Y = X W + b + noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_s)) * rng.uniform(0.3, 3.0, d_s) + rng.standard_normal(d_s) * 4
    w = rng.standard_normal((d_s, d_t))
    y = x @ w + rng.standard_normal(d_t) + noise * rng.standard_normal((n, d_t))
    return x, y, w


def _rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


@pytest.mark.parametrize("n, d_s", [(60, 8), (12, 20)])
def test_weight_solves_the_normal_equations(n, d_s):
    x, y, _ = _pairs(n, d_s, 5, noise=1.0)
    m = fit_ridge(x, y, lambdas=[0.7], heldout_fraction=0)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.solve(xc.T @ xc + 0.7 * np.eye(d_s), xc.T @ yc)
    assert _rel(m.weight.numpy(), direct) < 1e-10
    assert _rel(m.bias.numpy(), y.mean(0) - x.mean(0) @ direct) < 1e-10


@pytest.mark.parametrize(
    "n, d_s, d_t, noise, dtype",
    [
        (80, 12, 6, 8.0, np.float64),
        (80, 12, 6, 8.0, np.float32),
        (25, 40, 5, 3.0, np.float64),
        (40, 40, 3, 10.0, np.float64),
    ],
)
def test_matches_sklearn_ridgecv(n, d_s, d_t, noise, dtype):
    x, y, _ = _pairs(n, d_s, d_t, noise)
    x, y = x.astype(dtype), y.astype(dtype)
    sk = RidgeCV(alphas=GRID, store_cv_results=True).fit(x, y)
    m = fit_ridge(x, y, lambdas=GRID, heldout_fraction=0)
    tol = 1e-6 if dtype == np.float32 else 1e-8  # sklearn rounds its float32 answers to float32
    assert m.lam == sk.alpha_
    assert _rel(m.weight.numpy(), sk.coef_.T) < tol
    assert _rel(m.bias.numpy(), sk.intercept_) < tol
    loo = [m.scores[lam]["loo_mse"] for lam in GRID]
    assert _rel(loo, sk.cv_results_.mean(axis=(0, 1), dtype=np.float64)) < tol


def test_matches_sklearn_on_repeated_and_missing_directions():
    """Equal singular values (one run of near pairs) and a duplicated column (a zero one)."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((50, 9)))
    x = np.hstack([q * 3.0, q[:, :1] * 3.0]) + 1.0
    y = x @ rng.standard_normal((10, 4)) + rng.standard_normal((50, 4))
    sk = RidgeCV(alphas=GRID, store_cv_results=True).fit(x, y)
    m = fit_ridge(x, y, lambdas=GRID, heldout_fraction=0)
    assert m.lam == sk.alpha_
    assert _rel(m.weight.numpy(), sk.coef_.T) < 1e-8
    assert _rel([m.scores[lam]["loo_mse"] for lam in GRID], sk.cv_results_.mean(axis=(0, 1))) < 1e-10


def test_kfold_and_heldout_report_equal_explicit_refits():
    x, y, _ = _pairs(40, 6, 4, noise=5.0, seed=2)
    m = fit_ridge(x, y, lambdas=GRID, cv=4, heldout_fraction=0.25, seed=3)
    perm = np.random.default_rng(3).permutation(40)
    test = perm[:10]
    train = np.setdiff1d(np.arange(40), test)
    for lam in GRID:
        sse = 0.0
        for fold in np.array_split(perm, 4):
            rest = np.setdiff1d(np.arange(40), fold)
            sse += ((y[fold] - Ridge(alpha=lam).fit(x[rest], y[rest]).predict(x[fold])) ** 2).sum()
        pred = Ridge(alpha=lam).fit(x[train], y[train]).predict(x[test])
        a, b = pred - y[train].mean(0), y[test] - y[train].mean(0)
        cosine = ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()
        r2 = 1 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean(0)) ** 2).sum()
        assert m.scores[lam] == pytest.approx({"cv_mse": sse / y.size, "r2": r2, "cosine": cosine}, rel=1e-9)


def test_kfold_picks_a_small_lambda_for_clean_data_and_a_large_one_for_noise():
    x, y, _ = _pairs(60, 10, 4, noise=0.01)
    assert fit_ridge(x, y, lambdas=GRID, cv=5, heldout_fraction=0).lam == GRID[0]
    rng = np.random.default_rng(4)
    noise_only = rng.standard_normal((60, 4))
    assert fit_ridge(x, noise_only, lambdas=GRID, cv=5, heldout_fraction=0).lam == GRID[-1]


def test_recovers_a_known_map_from_noiseless_pairs():
    x, y, w = _pairs(100, 10, 6, noise=0.0)
    m = fit_ridge(x, y)
    assert m.lam == 0.01
    assert _rel(m.weight.numpy(), w) < 1e-3
    assert _rel(m.predict(x), y) < 1e-4
    v = np.random.default_rng(5).standard_normal(10)
    assert _rel(m.map_direction(v), v @ w) < 1e-3
    assert m.scores[0.01]["r2"] > 0.9999 and m.scores[0.01]["cosine"] > 0.9999


def test_predict_and_map_direction_keep_the_input_kind():
    x, y, _ = _pairs(30, 5, 3, noise=1.0)
    m = fit_ridge(torch.from_numpy(x).float(), torch.from_numpy(y))
    out = m.predict(x[:4].astype(np.float32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (4, 3)
    direction = m.map_direction(torch.ones(5))
    assert isinstance(direction, torch.Tensor) and direction.dtype == torch.float32 and direction.shape == (3,)
    with pytest.raises(TransferError, match="size 5"):
        m.map_direction(np.ones(6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"Y": np.ones((9, 3))}, "10 rows but Y has 9"),
        ({"X": np.ones((2, 4)), "Y": np.ones((2, 3))}, "at least 3"),
        ({"X": np.ones(10)}, "2-D"),
        ({"lambdas": [1.0, 0.0]}, "positive"),
        ({"lambdas": []}, "positive"),
        ({"X": np.where(np.eye(10, 4) > 0, np.nan, 1.0)}, "NaN"),
        ({"cv": 1}, "folds"),
        ({"cv": "kfold"}, "folds"),
        ({"heldout_fraction": 0.1}, "heldout_fraction"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(kwargs, match):
    rng = np.random.default_rng(0)
    args = {"X": rng.standard_normal((10, 4)), "Y": rng.standard_normal((10, 3))} | kwargs
    with pytest.raises(PersonactlError, match=match):
        fit_ridge(**args)


def test_save_load_round_trip(tmp_path):
    x, y, _ = _pairs(30, 5, 3, noise=1.0)
    m = fit_ridge(x, y, lambdas=GRID)
    loaded = RidgeMap.load(m.save(tmp_path / "map.safetensors"))
    assert torch.equal(loaded.weight, m.weight) and torch.equal(loaded.bias, m.bias)
    assert loaded.lam == m.lam and loaded.scores == m.scores
    (tmp_path / "junk.safetensors").write_bytes(b"not a map")
    with pytest.raises(TransferError, match="not a readable"):
        RidgeMap.load(tmp_path / "junk.safetensors")


def test_pad_or_truncate_keeps_values_and_norm():
    v = np.arange(1.0, 5.0)
    assert np.array_equal(pad_or_truncate(v, 6), [1, 2, 3, 4, 0, 0])
    assert np.linalg.norm(pad_or_truncate(v, 6)) == pytest.approx(np.linalg.norm(v))
    assert np.array_equal(pad_or_truncate(v, 2), [1, 2])
    out = pad_or_truncate(torch.arange(4, dtype=torch.float32), 5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_interpolate_keeps_endpoints_and_lines():
    v = np.array([2.0, -1.0, 5.0, 3.0])
    out = interpolate(v, 10)
    assert out.shape == (10,) and out[0] == 2.0 and out[-1] == 3.0
    assert np.allclose(interpolate(np.linspace(0, 1, 7), 13), np.linspace(0, 1, 13))
    assert np.allclose(interpolate(v, 4), v)


@pytest.mark.parametrize("d_s, d_t", [(5, 8), (8, 5), (6, 6)])
def test_random_orthogonal_is_an_isometry_on_the_smaller_side(d_s, d_t):
    q = random_orthogonal(d_s, d_t, seed=1)
    assert q.shape == (d_s, d_t)
    small = q @ q.T if d_s <= d_t else q.T @ q
    assert np.allclose(small, np.eye(min(d_s, d_t)))
    if d_s <= d_t:
        v = np.random.default_rng(0).standard_normal(d_s)
        assert np.linalg.norm(v @ q) == pytest.approx(np.linalg.norm(v))
    assert np.array_equal(q, random_orthogonal(d_s, d_t, seed=1))


def test_procrustes_recovers_a_known_embedding():
    q = random_orthogonal(6, 9, seed=2)
    x = np.random.default_rng(3).standard_normal((40, 6))
    r = procrustes(x, x @ q + 2.0)
    assert r.shape == (6, 9)
    assert np.allclose(r @ r.T, np.eye(6))
    assert np.allclose(r, q)


def test_rescale():
    assert np.linalg.norm(rescale(np.array([3.0, 4.0]), 10.0)) == pytest.approx(10.0)
    with pytest.raises(TransferError, match="zero"):
        rescale(np.zeros(3), 1.0)


def test_random_cosine_null_matches_random_orthogonal_maps():
    d_s, d_t = 4, 7
    v, oracle = np.arange(1.0, 1.0 + d_s), np.random.default_rng(6).standard_normal(d_t)
    null = random_cosine_null(oracle, n=400, seed=0)
    mapped = np.stack([v @ random_orthogonal(d_s, d_t, seed=s) for s in range(400)])
    literal = mapped @ oracle / (np.linalg.norm(mapped, axis=1) * np.linalg.norm(oracle))
    assert null.shape == (400,) and np.all(np.abs(null) <= 1)
    assert ks_2samp(null, literal).pvalue > 0.01


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), d_s=st.integers(1, 12), d_t=st.integers(1, 4), lam=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_ridge_equals_the_closed_form_for_any_shape_and_lambda(n, d_s, d_t, lam, seed):
    x, y, _ = _pairs(n, d_s, d_t, noise=1.0, seed=seed)
    m = fit_ridge(x, y, lambdas=[lam], heldout_fraction=0)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.solve(xc.T @ xc + lam * np.eye(d_s), xc.T @ yc)
    assert np.allclose(m.weight.numpy(), direct, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(direct).max()))
