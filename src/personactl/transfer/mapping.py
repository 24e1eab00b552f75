"""A fitted source -> target map as a folder, and persona vectors carried through it.

The folder holds `ridge_map.safetensors`, `procrustes.safetensors`, the
paired activations they were fitted on and `map.json` (models, layers,
sizes). A mapped vector is saved as an ordinary PersonaVector of the target
model, zero except at the target layer, so every steering command takes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import atomic_path, write_text_atomic
from ..errors import TransferError
from ..models import Backbone
from ..vectors import PersonaVector
from . import baselines
from .pairs import PairedActivations, collect_pairs
from .ridge import RidgeMap, fit_ridge

MAP_INFO, RIDGE_FILE, PROCRUSTES_FILE, PAIRS_FILE = "map.json", "ridge_map.safetensors", "procrustes.safetensors", "pairs.safetensors"
MAPPED_METHODS = ("ridge", "procrustes", "pad", "interpolate", "random")


@dataclass
class TransferMap:
    """A ridge map and a Procrustes map between two models' layers, with what they were made from."""

    ridge: RidgeMap
    procrustes: torch.Tensor  # [d_s, d_t]
    info: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> TransferMap:
        folder = Path(folder)
        if not (folder / MAP_INFO).is_file():
            raise TransferError(f"{folder} is not a transfer map folder (no {MAP_INFO}): make one with `personactl transfer extract`")
        info = json.loads((folder / MAP_INFO).read_text(encoding="utf-8"))
        return cls(RidgeMap.load(folder / RIDGE_FILE), load_file(str(folder / PROCRUSTES_FILE))["procrustes"], info)


def fit_map(
    source: Backbone,
    target: Backbone,
    source_layer: int,
    target_layer: int,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    lambdas: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    n_pairs: int = 5000,
    reduction: str = "last",
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[TransferMap, PairedActivations]:
    """Collect paired activations (cached in `out_dir`), fit ridge (LOO over `lambdas`) and Procrustes, save both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = collect_pairs(
        source,
        target,
        texts,
        source_layer,
        target_layer,
        reduction=reduction,
        n_pairs=n_pairs,
        seed=seed,
        batch_size=batch_size,
        cache=out / PAIRS_FILE,
    )
    ridge = fit_ridge(pairs.source, pairs.target, list(lambdas), cv="loo", seed=seed)
    procrustes = baselines.procrustes(pairs.source, pairs.target).float()
    ridge.save(out / RIDGE_FILE)
    with atomic_path(out / PROCRUSTES_FILE) as tmp:
        save_file({"procrustes": procrustes.contiguous()}, str(tmp))
    info = {
        "source_model": source.name,
        "target_model": target.name,
        "source_layer": source_layer,
        "target_layer": target_layer,
        "source_layers": source.n_layers,
        "target_layers": target.n_layers,
        "source_hidden": source.hidden_size,
        "target_hidden": target.hidden_size,
        "reduction": reduction,
        "n_pairs": len(pairs),
        "lambda": ridge.lam,
        "lambda_note": lambda_note(ridge.lam, lambdas),
    }
    write_text_atomic(out / MAP_INFO, json.dumps(info, indent=2))
    return TransferMap(ridge, procrustes, info), pairs


def lambda_note(chosen: float, grid: Sequence[float]) -> str:
    """A warning when the chosen penalty sits at an end of the grid (the best one may lie beyond it)."""
    if len(grid) > 1 and chosen == max(grid):
        return f"the chosen lambda {chosen:g} is the largest tried: extend lambda_values upwards"
    if len(grid) > 1 and chosen == min(grid):
        return f"the chosen lambda {chosen:g} is the smallest tried: extend lambda_values downwards"
    return ""


def method_vectors(v_source: torch.Tensor, tmap: TransferMap, seed: int = 0, oracle: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each method's target-space vector for a source vector (float32); with `oracle`, the native one too."""
    d_t = int(tmap.info["target_hidden"])
    if v_source.shape != (int(tmap.info["source_hidden"]),):
        raise TransferError(f"a vector of size {tuple(v_source.shape)} does not fit a map from size {tmap.info['source_hidden']}")
    v64 = v_source.double()
    vectors = {
        "ridge": tmap.ridge.map_direction(v64),
        "procrustes": v64 @ tmap.procrustes.double(),
        "pad": baselines.pad_or_truncate(v64, d_t),
        "interpolate": baselines.interpolate(v64, d_t),
        "random": v64 @ torch.from_numpy(baselines.random_orthogonal(len(v64), d_t, seed)),
    }
    if oracle is not None:
        vectors["oracle"] = oracle.double()
    return {k: v.float() for k, v in vectors.items()}


def map_vector(vector: PersonaVector, tmap: TransferMap, method: str = "ridge", seed: int = 0) -> PersonaVector:
    """The source model's persona vector carried to the target model by `method` (at the map's target layer only)."""
    if method not in MAPPED_METHODS:
        raise TransferError(f"unknown method '{method}': use one of {', '.join(MAPPED_METHODS)}")
    if vector.n_layers != tmap.info["source_layers"] or vector.hidden_size != tmap.info["source_hidden"]:
        raise TransferError(
            f"the vector is for a model with {vector.n_layers} layers of size {vector.hidden_size}; this map starts from "
            f"{tmap.info['source_model']} ({tmap.info['source_layers']} layers of size {tmap.info['source_hidden']})"
        )
    mapped = method_vectors(vector.directions[tmap.info["source_layer"]], tmap, seed)[method]
    directions = torch.zeros(tmap.info["target_layers"] + 1, tmap.info["target_hidden"])
    directions[tmap.info["target_layer"]] = mapped
    result = PersonaVector(
        directions,
        trait=vector.trait,
        model=tmap.info["target_model"],
        method=f"transfer:{method}",
        positions=vector.positions,
        n_samples=vector.n_samples,
    )
    result.extra["transfer"] = {**tmap.info, "method": method, "from_vector": vector.fingerprint()}
    return result
