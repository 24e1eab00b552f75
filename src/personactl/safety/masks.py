"""Safety-critical weight masks: top fractions of scores, the set difference, random controls, files.

Wei et al. 2024: a weight is safety-critical when it is in the top q of its
matrix by safety score but not in the top p by utility score. Masks and scores
are dicts {linear layer name: tensor shaped like its weight}, stored as
safetensors with metadata, or as the reference's `.pt` dicts (read with
`weights_only=True`, so a file holding code is refused, never run).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path
from ..models import Backbone
from .errors import SafetyError
from .wanda import linear_layers

Tensors = dict[str, torch.Tensor]


def check_fraction(value: float, name: str = "sparsity") -> float:
    """A fraction strictly between 0 and 1 (a top-q% selection)."""
    if not 0.0 < value < 1.0:
        raise SafetyError(f"{name} must be between 0 and 1 (exclusive), e.g. 0.03 for the top 3%; got {value}")
    return float(value)


def top_fraction(scores: Mapping[str, torch.Tensor], fraction: float) -> Tensors:
    """Per matrix, the int(n * fraction) highest-scoring weights (exactly that many; ties broken by position)."""
    check_fraction(fraction)
    masks: Tensors = {}
    for name, score in scores.items():
        k = int(score.numel() * fraction)
        mask = torch.zeros(score.numel(), dtype=torch.bool)
        if k:
            mask[torch.topk(score.reshape(-1).float(), k).indices] = True
        masks[name] = mask.reshape(score.shape)
    return masks


def set_difference(safety: Mapping[str, torch.Tensor], utility: Mapping[str, torch.Tensor], sparsity: float, utility_sparsity: float) -> Tensors:
    """Top-`sparsity` by safety score minus top-`utility_sparsity` by utility score, per matrix."""
    check_fraction(utility_sparsity, "utility sparsity")
    top_safety, top_utility = top_fraction(safety, sparsity), top_fraction(utility, utility_sparsity)
    return {name: top_safety[name] & ~top_utility[name] for name in top_safety}


def random_like(masks: Mapping[str, torch.Tensor], seed: int = 0) -> Tensors:
    """A random mask with the same number of weights as `masks` in every matrix (the control)."""
    generator = torch.Generator().manual_seed(seed)
    out: Tensors = {}
    for name, mask in masks.items():
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[torch.randperm(mask.numel(), generator=generator)[: int(mask.sum())]] = True
        out[name] = flat.reshape(mask.shape)
    return out


def mask_counts(masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Masked weights and all weights of the masked matrices."""
    return {"masked": int(sum(int(m.sum()) for m in masks.values())), "total": int(sum(m.numel() for m in masks.values()))}


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, object] | None = None) -> Path:
    """Write a dict of tensors atomically: safetensors (JSON-valued metadata) or, for `.pt`, the reference's plain dict."""
    path = Path(path)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".pt":
            torch.save(contiguous, tmp)
        else:
            save_file(contiguous, str(tmp), metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    return path


def load_tensors(path: str | Path) -> tuple[Tensors, dict[str, object]]:
    """A dict of tensors and its metadata from safetensors or a `.pt` dict (never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise SafetyError(f"{path} does not exist: run `personactl safety identify` first (or give the right folder)")
    if path.suffix == ".pt":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
            raise SafetyError(f"refused {path}: it is not a plain dict of tensors (a .pt file that holds code is never loaded)") from exc
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
            raise SafetyError(f"{path} must hold a dict {{layer name: tensor}}, as the reference's masks and scores do")
        return dict(data), {}
    try:
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        return load_file(str(path)), {k: json.loads(v) for k, v in raw.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafetyError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc


def match_to_model(backbone: Backbone, tensors: Mapping[str, torch.Tensor], what: str = "mask file") -> Tensors:
    """The tensors keyed by this model's linear layer names; a missing layer or another shape is an error.

    Names may carry or lack a prefix (the reference names layers with or without `model.`).
    """
    layers = linear_layers(backbone)
    matched: Tensors = {}
    for key, tensor in tensors.items():
        name = key if key in layers else _unique_suffix_match(key, layers)
        if name is None:
            raise SafetyError(f"{what} names layer '{key}', which {backbone.name} does not have: it was made for another model")
        shape = tuple(layers[name].weight.shape)
        if tuple(tensor.shape) != shape:
            raise SafetyError(f"{what} was made for another model: '{key}' has shape {tuple(tensor.shape)}, {backbone.name} has {shape}")
        matched[name] = tensor
    if not matched:
        raise SafetyError(f"{what} holds no layers")
    return matched


def _unique_suffix_match(key: str, names: Mapping[str, object]) -> str | None:
    hits = [n for n in names if n.endswith("." + key) or key.endswith("." + n)]
    return hits[0] if len(hits) == 1 else None
