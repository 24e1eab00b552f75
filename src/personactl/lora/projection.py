"""Predict fine-tuning drift by weight projection: how far a checkpoint moved along a persona direction dW.

Per module m adapted by dW: <W_ft - W_base, dW_m>_F. The total is their sum over
||dW||_F (all modules), so a checkpoint equal to base + c * dW projects to
c * ||dW||_F; the cosine says how much of the change lies along dW. Checkpoints
are PEFT LoRA folders (inner products from the factors, never dense) or full
model folders in safetensors (read one tensor at a time, so 7-8B checkpoints fit
in memory; pickles are refused). Per-layer values follow the package layer
convention: a module inside decoder block b belongs to layer b + 1 (the
hidden state it writes). `correlate` and `drift_report` compare projections with
measured trait scores of the same checkpoints (Pearson, Spearman, permutation p-values,
Fisher-z CIs).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import PersonactlError
from ..models import Backbone
from ..progress import progress_bar
from .direction import CONFIG, WEIGHTS, AdapterError, LoRADirection, LoRAFactors, _is_conv1d

Delta = LoRAFactors | torch.Tensor  # a module's W_ft - W_base: LoRA factors or dense [out, in]
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_BLOCK = re.compile(r"\.(\d+)(?:\.|$)")


class DriftError(PersonactlError):
    """Scores that cannot be paired with projections, or a correlation that is undefined."""


@dataclass
class DriftProjection:
    """How far one checkpoint moved along dW: total (in units of ||dW||_F), per layer, and cosines."""

    checkpoint: str
    total: float
    per_layer: dict[int, float]
    cosine: float
    per_layer_cosine: dict[int, float] = field(default_factory=dict)
    kind: str = ""  # "adapter" or "full"

    @property
    def name(self) -> str:
        return Path(self.checkpoint).name


def factor_inner(x: LoRAFactors, y: LoRAFactors) -> float:
    """<s1 B1 A1, s2 B2 A2>_F = s1 s2 sum((B1^T B2) * (A1 A2^T)), in float64 without dense matrices.

    The factors are small, so numpy on the CPU: no per-call thread-pool wake-up as with torch's tiny matmuls.
    """
    b1, a1, b2, a2 = (t.detach().to("cpu", torch.float64).numpy() for t in (x.B, x.A, y.B, y.A))
    return float(x.scaling * y.scaling * ((b1.T @ b2) * (a1 @ a2.T)).sum())


def dense_inner(delta: torch.Tensor, f: LoRAFactors) -> float:
    """<D, s B A>_F = s sum((B^T D) * A) for a dense D [out, in], on D's device."""
    dtype = torch.float64 if delta.device.type == "cpu" else torch.float32
    b, a = (t.detach().to(delta.device, dtype) for t in (f.B, f.A))
    return float(f.scaling * ((b.T @ delta.to(dtype)) * a).sum())


def _inner(delta: Delta, f: LoRAFactors) -> float:
    return factor_inner(delta, f) if isinstance(delta, LoRAFactors) else dense_inner(delta, f)


def _sq_norm(delta: Delta) -> float:
    if isinstance(delta, LoRAFactors):
        return factor_inner(delta, delta)
    dtype = torch.float64 if delta.device.type == "cpu" else torch.float32
    return float(delta.to(dtype).pow(2).sum())


def layer_of(module: str) -> int | None:
    """Layer (package convention) of a module path: block b -> b + 1; None outside the blocks."""
    match = _BLOCK.search(module)
    return int(match.group(1)) + 1 if match else None


def projection(deltas: Mapping[str, Delta], direction: LoRADirection, checkpoint: str = "", kind: str = "") -> DriftProjection:
    """Project per-module changes (absent = unchanged) onto dW; cosines use the change on dW's modules only."""
    dot: dict[int | None, float] = {}
    dir_sq: dict[int | None, float] = {}
    ck_sq: dict[int | None, float] = {}
    for name, f in direction.modules.items():
        layer = layer_of(name)
        delta = deltas.get(name)
        dir_sq[layer] = dir_sq.get(layer, 0.0) + factor_inner(f, f)
        if delta is not None:
            dot[layer] = dot.get(layer, 0.0) + _inner(delta, f)
            ck_sq[layer] = ck_sq.get(layer, 0.0) + _sq_norm(delta)
    norm = math.sqrt(sum(dir_sq.values()))
    if norm == 0:
        raise AdapterError("the persona direction is zero (all its modules have dW = 0): re-extract it")

    def cos(ip: float, a: float, b: float) -> float:
        return ip / math.sqrt(a * b) if a > 0 and b > 0 else 0.0

    layers = sorted(k for k in dir_sq if k is not None)
    return DriftProjection(
        checkpoint=checkpoint,
        total=sum(dot.values()) / norm,
        per_layer={l: dot.get(l, 0.0) / math.sqrt(dir_sq[l]) if dir_sq[l] > 0 else 0.0 for l in layers},
        cosine=cos(sum(dot.values()), sum(dir_sq.values()), sum(ck_sq.values())),
        per_layer_cosine={l: cos(dot.get(l, 0.0), dir_sq[l], ck_sq.get(l, 0.0)) for l in layers},
        kind=kind,
    )


def _pickle_error(path: Path, found: list[Path]) -> AdapterError:
    names = ", ".join(p.name for p in found[:3])
    return AdapterError(
        f"checkpoint {path} holds only pickle weights ({names}); pickles can run code when loaded and are refused: "
        "re-save it with save_pretrained(..., safe_serialization=True) or convert it to safetensors"
    )


def checkpoint_kind(path: str | Path) -> str:
    """'adapter' (adapter_config.json) or 'full' (config.json + *.safetensors); refuses pickles and the rest."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"checkpoint {path} is not a folder: pass a PEFT adapter folder or a model folder")
    pickles = sorted(p for pattern in _PICKLES for p in path.glob(pattern))
    if (path / CONFIG).is_file():
        if not (path / WEIGHTS).is_file() and pickles:
            raise _pickle_error(path, pickles)
        return "adapter"
    if (path / "config.json").is_file():
        if any(path.glob("*.safetensors")):
            return "full"
        if pickles:
            raise _pickle_error(path, pickles)
        raise AdapterError(f"checkpoint {path} has config.json but no *.safetensors weights")
    raise AdapterError(f"{path} is not a checkpoint: expected a PEFT adapter ({CONFIG}) or a model folder (config.json + *.safetensors)")


def _adapter_deltas(backbone: Backbone, path: Path) -> dict[str, LoRAFactors]:
    """The LoRA factors of a fine-tuning adapter, checked against the backbone."""
    adapter = LoRADirection.load(path)
    if adapter.config.get("use_dora"):
        raise AdapterError(f"checkpoint {path} is a DoRA adapter: its change is not B @ A; merge it and save the full model")
    try:
        adapter.check_base(backbone)
    except AdapterError as exc:
        raise AdapterError(f"checkpoint {path}: {exc}") from exc
    return adapter.modules


def _family(model_type: str | None) -> str:
    return (model_type or "").removesuffix("_text")


def _find_key(keys: set[str], module: str) -> str | None:
    """The checkpoint key of `module`'s weight; tolerates a different wrapper prefix (model., language_model.)."""
    if f"{module}.weight" in keys:
        return f"{module}.weight"
    parts = module.split(".")
    for i in range(1, len(parts) - 1):
        tail = ".".join(parts[i:]) + ".weight"
        hits = [k for k in keys if k == tail or k.endswith("." + tail)]
        if len(hits) == 1:
            return hits[0]
    return None


class _FullDiffs(Mapping[str, torch.Tensor]):
    """W_ft - W_base per module of dW, read lazily from a safetensors model folder ([out, in] layout)."""

    def __init__(self, backbone: Backbone, direction: LoRADirection, path: Path) -> None:
        from safetensors import safe_open  # noqa: PLC0415

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        made = config.get("model_type")
        if _family(made) != _family(backbone.model_type):
            raise AdapterError(f"checkpoint {path} is a {made} model, not a {backbone.model_type} like {backbone.name}")
        index = path / "model.safetensors.index.json"
        files = (
            sorted({path / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
            if index.is_file()
            else sorted(path.glob("*.safetensors"))
        )
        self._handles: dict[str, Any] = {}
        for file in files:
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as exc:  # noqa: BLE001 - missing shard, corrupt header
                raise AdapterError(f"checkpoint {path}: cannot read {file.name} ({str(exc).splitlines()[0]})") from exc
            self._handles.update({key: handle for key in handle.keys()})
        self._backbone, self._keys = backbone, {}
        keys = set(self._handles)
        for name in direction.modules:
            key = _find_key(keys, name)
            if key is None:
                raise AdapterError(f"checkpoint {path} has no weight for module '{name}' (a checkpoint of another architecture?)")
            shape = tuple(self._handles[key].get_slice(key).get_shape())
            expected = tuple(backbone.model.get_submodule(name).weight.shape)
            if shape != expected:
                raise AdapterError(
                    f"checkpoint {path}: '{key}' is {'x'.join(map(str, shape))} but {backbone.name} has "
                    f"{'x'.join(map(str, expected))} (a checkpoint of another model size?)"
                )
            self._keys[name] = key

    def __getitem__(self, name: str) -> torch.Tensor:
        key = self._keys[name]
        module = self._backbone.model.get_submodule(name)
        base = module.weight.detach()
        diff = self._handles[key].get_tensor(key).to(base.device, torch.float32) - base.float()
        return diff.T if _is_conv1d(module) else diff

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _as_direction(direction: LoRADirection | str | Path) -> LoRADirection:
    return direction if isinstance(direction, LoRADirection) else LoRADirection.load(direction)


def project_checkpoint(backbone: Backbone, direction: LoRADirection | str | Path, checkpoint_path: str | Path) -> DriftProjection:
    """Project one fine-tuned checkpoint (adapter or full model of `backbone`'s base) onto dW."""
    direction = _as_direction(direction)
    direction.check_base(backbone)
    path = Path(checkpoint_path)
    kind = checkpoint_kind(path)
    deltas: Mapping[str, Delta] = _adapter_deltas(backbone, path) if kind == "adapter" else _FullDiffs(backbone, direction, path)
    with torch.no_grad():
        return projection(deltas, direction, str(path), kind)


def _is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG).is_file() or (path / "config.json").is_file())


def project_checkpoints(
    backbone: Backbone, direction: LoRADirection | str | Path, folder_or_paths: str | Path | Sequence[str | Path]
) -> list[DriftProjection]:
    """Project several checkpoints: explicit paths, or every checkpoint subfolder of a folder (sorted by name)."""
    if isinstance(folder_or_paths, (str, Path)):
        root = Path(folder_or_paths)
        if not root.is_dir():
            raise DriftError(f"checkpoint folder not found: {root}")
        paths = [root] if _is_checkpoint_dir(root) else sorted((p for p in root.iterdir() if _is_checkpoint_dir(p)), key=lambda p: p.name)
        if not paths:
            raise DriftError(f"{root} holds no checkpoints: expected subfolders with {CONFIG} or config.json")
    else:
        paths = [Path(p) for p in folder_or_paths]
        if not paths:
            raise DriftError("no checkpoints given")
    direction = _as_direction(direction)
    results = []
    with progress_bar("projecting checkpoints", len(paths)) as advance:
        for path in paths:
            results.append(project_checkpoint(backbone, direction, path))
            advance(1)
    return results


EXACT_P_MAX = 7  # 7! = 5040 pairings, enumerated at once
N_PERM = 10_000  # Monte-Carlo pairings above EXACT_P_MAX: p resolves down to 1e-4
_Z975 = 1.959963984540054  # standard normal 97.5% quantile
PERFECT = 1 - 1e-12  # |r| at or above this is a perfect (rank) correlation, whatever the rounding


def correlate(projections: Sequence[float], scores: Sequence[float], seed: int = 0, n_perm: int = N_PERM) -> dict[str, Any]:
    """Pearson r and Spearman rho with permutation p-values and Fisher-z 95% CIs, one pair per checkpoint.

    p-values are two-sided permutation tests of |r| (of the ranks: |rho|): exact
    over all n! pairings when n <= EXACT_P_MAX (scipy's asymptotic p for rho = 1
    at n = 5 would be ~1e-24, while the exact value is 2/120), otherwise
    Monte-Carlo over `n_perm` random pairings drawn from `seed`, with
    p = (1 + hits) / (1 + n_perm) so it is never 0. The intervals are Fisher's
    z: tanh(atanh(r) +- 1.96 / sqrt(n - 3)) for r, and for rho the same with
    Bonett and Wright's variance (1 + rho^2 / 2) / (n - 3) (`fisher_ci`). A
    percentile bootstrap over checkpoints, the interval used before, covers r
    in about 90% of simulated runs at 9-18 checkpoints; these cover it in
    93-97% (tests/test_calibration_drift.py). The same inputs and seed give the
    same dict, so a stored result can be recomputed.
    """
    from scipy import stats  # noqa: PLC0415

    x, y = np.asarray(projections, dtype=float), np.asarray(scores, dtype=float)
    if x.shape != y.shape:
        raise DriftError(f"{len(x)} projections but {len(y)} scores: pass one score per checkpoint")
    n = len(x)
    if n < 3:
        raise DriftError(f"need at least 3 checkpoints with scores to correlate, got {n}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise DriftError("correlation is undefined: all projections or all scores are equal")
    r = float(np.corrcoef(x, y)[0, 1])
    rho = float(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1])
    exact = n <= EXACT_P_MAX
    return {
        "n": n,
        "pearson_r": r,
        "pearson_p": permutation_p(x, y, n_perm=n_perm, seed=seed),
        "pearson_ci": fisher_ci(r, n),
        "spearman_rho": rho,
        "spearman_p": permutation_p(x, y, ranks=True, n_perm=n_perm, seed=seed),
        "spearman_ci": fisher_ci(rho, n, ranks=True),
        "ci_method": "Fisher z (Spearman: Bonett-Wright variance)",
        "p_method": "exact" if exact else "monte-carlo",
        "n_perm": math.factorial(n) if exact else n_perm,
        "seed": seed,
    }


def fisher_ci(r: float, n: int, z: float = _Z975, ranks: bool = False) -> list[float]:
    """95% interval of a correlation by Fisher's z: tanh(atanh(r) +- z * sqrt(v / (n - 3))); [nan, nan] when n <= 3.

    v = 1 for Pearson's r; for Spearman's rho (`ranks`) Bonett and Wright's (2000) 1 + rho^2 / 2. A perfect Pearson
    r gives [r, r]. A perfect rho is common with few checkpoints (n = 5: a quarter of the draws at a true 0.9), so
    its far bound is the one of the largest rho short of it (one adjacent pair swapped: 1 - 12 / (n (n^2 - 1))).
    """
    if n <= 3:
        return [math.nan, math.nan]
    if abs(r) >= PERFECT:
        if not ranks:
            return [float(r), float(r)]
        sign = math.copysign(1.0, r)
        near = fisher_ci(sign * (1 - 12 / (n * (n * n - 1))), n, z, ranks)
        return [near[0], 1.0] if sign > 0 else [-1.0, near[1]]
    centre, half = math.atanh(r), z * math.sqrt((1 + r * r / 2 if ranks else 1.0) / (n - 3))
    return [math.tanh(centre - half), math.tanh(centre + half)]


def permutation_p(xs: ArrayLike, ys: ArrayLike, ranks: bool = False, n_perm: int = N_PERM, seed: int = 0) -> float:
    """Two-sided permutation p-value of Pearson's |r| (of the ranks: Spearman).

    Exact over every pairing for n <= EXACT_P_MAX; otherwise Monte-Carlo over
    `n_perm` pairings drawn with `seed`, counting the observed one: (1 + hits) / (1 + n_perm).
    """
    from scipy import stats  # noqa: PLC0415

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if ranks:
        x, y = stats.rankdata(x), stats.rankdata(y)
    n = len(y)
    if n <= EXACT_P_MAX:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        if n_perm < 1:
            raise DriftError(f"n_perm must be at least 1, got {n_perm}")
        rng = np.random.default_rng([seed, 1])  # the stream the p-values were first drawn from: stored ones still match
        perms = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
    xc = x - x.mean()
    yc = y[perms] - y.mean()
    r = (yc @ xc) / (np.linalg.norm(xc) * np.linalg.norm(yc, axis=1))
    observed = float(xc @ (y - y.mean()) / (np.linalg.norm(xc) * np.linalg.norm(y - y.mean())))
    hits = int(np.sum(np.abs(r) >= abs(observed) - 1e-12))
    if n <= EXACT_P_MAX:
        return hits / len(perms)  # the identity is among the pairings
    return (1 + hits) / (1 + n_perm)


def read_scores(csv_path: str | Path) -> dict[str, float]:
    """Read `checkpoint,score` rows (checkpoint = subfolder name or path) into {checkpoint: score}."""
    path = Path(csv_path)
    if not path.is_file():
        raise DriftError(f"scores file not found: {path}")
    scores: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        for column in ("checkpoint", "score"):
            if column not in columns:
                raise DriftError(
                    f"{path} has no '{column}' column (found: {', '.join(columns) or 'nothing'}); the first line must be: checkpoint,score"
                )
        reader.fieldnames = columns
        for row in reader:
            name, raw = (row.get("checkpoint") or "").strip(), (row.get("score") or "").strip()
            if not name:
                raise DriftError(f"{path} line {reader.line_num}: the checkpoint is empty")
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DriftError(f"{path} line {reader.line_num}: score '{raw}' is not a number")
            if name in scores:
                raise DriftError(f"{path} line {reader.line_num}: checkpoint '{name}' is listed twice")
            scores[name] = value
    if not scores:
        raise DriftError(f"{path} holds no scores: add one line checkpoint,score per checkpoint")
    return scores


def _names_it(key: str, checkpoint: str, base: Path) -> bool:
    target = Path(checkpoint).resolve()
    return key == Path(checkpoint).name or Path(key).resolve() == target or (base / key).resolve() == target


def match_scores(projections: Sequence[DriftProjection], scores: Mapping[str, float], base: str | Path = ".") -> list[float]:
    """One score per projection, in order; every score must name exactly one projected checkpoint and vice versa."""
    owner: dict[int, str] = {}
    for key in scores:
        hits = [i for i, p in enumerate(projections) if _names_it(key, p.checkpoint, Path(base))]
        if not hits:
            known = ", ".join(p.name for p in projections[:5]) + (", ..." if len(projections) > 5 else "")
            raise DriftError(f"the scores name checkpoint '{key}' but no such checkpoint was projected (checkpoints: {known})")
        if len(hits) > 1:
            raise DriftError(f"the score for '{key}' matches {len(hits)} checkpoints: write their paths instead of names")
        if hits[0] in owner:
            raise DriftError(f"checkpoint {projections[hits[0]].name} has two scores ('{owner[hits[0]]}' and '{key}')")
        owner[hits[0]] = key
    missing = [p.name for i, p in enumerate(projections) if i not in owner]
    if missing:
        raise DriftError(f"no score for checkpoint(s) {', '.join(missing)}: add a line checkpoint,score for each")
    return [scores[owner[i]] for i in range(len(projections))]


def drift_report(
    backbone: Backbone,
    direction: LoRADirection | str | Path,
    checkpoints: str | Path | Sequence[str | Path],
    scores_csv: str | Path | None = None,
    seed: int = 0,
    n_perm: int = N_PERM,
) -> dict[str, Any]:
    """Projections of all checkpoints (rows) and, with a scores CSV, their correlation with the scores (see `correlate`)."""
    projections = project_checkpoints(backbone, direction, checkpoints)
    rows: list[dict[str, Any]] = [
        {
            "checkpoint": p.name,
            "path": p.checkpoint,
            "kind": p.kind,
            "projection": p.total,
            "cosine": p.cosine,
            "per_layer": p.per_layer,
            "per_layer_cosine": p.per_layer_cosine,
        }
        for p in projections
    ]
    report: dict[str, Any] = {"rows": rows, "correlation": None}
    if scores_csv is not None:
        matched = match_scores(projections, read_scores(scores_csv), Path(scores_csv).parent)
        for row, score in zip(rows, matched):
            row["score"] = score
        report["correlation"] = correlate([p.total for p in projections], matched, seed, n_perm)
    return report
