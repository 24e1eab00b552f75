"""A persona direction in weight space: LoRA factors per module, dW = scaling * B @ A.

The difference of a positive and a negative rank-r LoRA is exactly the rank-2r
LoRA with B = [B_pos, -B_neg] and A = [A_pos; A_neg]; with lora_alpha raised
so that the scaling stays the same, it is a plain PEFT adapter folder that
`peft.PeftModel.from_pretrained` loads. `merged()` adds coef * dW into the base
weights (no runtime cost) and restores them bit-exactly on exit.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file

from .._io import check_replaceable, replace_folder, temp_folder_beside
from ..errors import PersonactlError
from ..models import Backbone

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PERSONA = "persona.json"
_PREFIX = "base_model.model."


class AdapterError(PersonactlError):
    """An adapter folder that is missing, malformed or made for another model."""


@dataclass
class LoRAFactors:
    """One adapted module: A [r, in], B [out, r] and the scaling."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        """scaling * B @ A, [out, in], in float32."""
        return self.scaling * (self.B.float() @ self.A.float())


def _scaling(config: dict[str, Any], rank: int) -> float:
    alpha = float(config["lora_alpha"])
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


@dataclass
class LoRADirection:
    """LoRA factors per base-model module path, with the PEFT config and persona metadata."""

    modules: dict[str, LoRAFactors]
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> LoRADirection:
        """Read a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)."""
        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise AdapterError(f"{folder} is not a PEFT adapter folder (needs {CONFIG} and {WEIGHTS})")
        config = read_json_object(folder / CONFIG)
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            raise AdapterError(f"{folder}: per-module rank/alpha patterns are not supported")
        tensors = load_file(str(folder / WEIGHTS))
        modules: dict[str, LoRAFactors] = {}
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            name = key.split(".lora_A.")[0].removeprefix(_PREFIX)
            b = tensors.get(key.replace(".lora_A.", ".lora_B."))
            if b is None:
                raise AdapterError(f"{folder}: {key} has no matching lora_B")
            modules[name] = LoRAFactors(a, b, _scaling(config, a.shape[0]))
        if not modules:
            raise AdapterError(f"{folder} holds no LoRA weights")
        meta_path = folder / PERSONA
        metadata = read_json_object(meta_path) if meta_path.exists() else {}
        return cls(modules, config, metadata)

    def save(self, folder: str | Path) -> Path:
        """Write a PEFT adapter folder plus persona.json, built aside and swapped in as a whole.

        An existing folder is replaced only when this tool wrote it (it holds persona.json)
        or it is empty; anything else is refused with an OutputError.
        """
        folder = Path(folder)
        check_replaceable(folder, PERSONA)
        tensors = {}
        for name, f in self.modules.items():
            tensors[f"{_PREFIX}{name}.lora_A.weight"] = f.A.contiguous()
            tensors[f"{_PREFIX}{name}.lora_B.weight"] = f.B.contiguous()
        tmp = temp_folder_beside(folder)
        try:
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
            (tmp / CONFIG).write_text(json.dumps(self.config, indent=2), encoding="utf-8")
            (tmp / PERSONA).write_text(json.dumps(self.metadata, indent=2, default=str), encoding="utf-8")
            replace_folder(tmp, folder, owned=PERSONA)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @property
    def rank(self) -> int:
        return next(iter(self.modules.values())).rank

    def check_base(self, backbone: Backbone) -> None:
        """Refuse an adapter whose modules or shapes do not exist in `backbone`."""
        base = self.metadata.get("base_model") or self.config.get("base_model_name_or_path")
        made_for = self.metadata.get("base_model_type")
        if made_for and made_for != backbone.model_type:
            raise AdapterError(f"adapter made for a {made_for} model ({base}), not for {backbone.name} ({backbone.model_type})")
        for name, f in self.modules.items():
            try:
                module = backbone.model.get_submodule(name)
            except AttributeError as exc:
                raise AdapterError(f"adapter module '{name}' is not in {backbone.name} (adapter made for {base or 'another model'})") from exc
            out_features, in_features = _weight_shape(module)
            if (f.B.shape[0], f.A.shape[1]) != (out_features, in_features):
                raise AdapterError(
                    f"adapter module '{name}' is {f.B.shape[0]}x{f.A.shape[1]} but {backbone.name} has "
                    f"{out_features}x{in_features} (adapter made for {base or 'another model'})"
                )


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of an adapter folder; AdapterError when it is corrupt."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is corrupt ({exc}): retrain that adapter or delete its folder") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{path} is corrupt (expected a JSON object): retrain that adapter or delete its folder")
    return data


def combine(terms: Sequence[tuple[LoRADirection, float]], metadata: dict[str, Any] | None = None) -> LoRADirection:
    """sum_i w_i * dW_i exactly, as one LoRA of rank sum r_i (factors concatenated, not a lossy average).

    Per module A = [A_1; A_2; ...] and B = [w_1 c_1 B_1, w_2 c_2 B_2, ...] with
    c_i = s_i / s, where s is the shared scaling when all adapters have one
    (so B_i is copied exactly for w_i = +-1) and 1 otherwise; lora_alpha is set
    so that the new adapter's scaling is s.
    """
    if not terms:
        raise AdapterError("nothing to combine: give at least one adapter and weight")
    first = terms[0][0]
    if any(set(d.modules) != set(first.modules) for d, _ in terms):
        raise AdapterError("the adapters adapt different modules: train them with the same target modules")
    scalings = {f.scaling for d, _ in terms for f in d.modules.values()}
    shared = scalings.pop() if len(scalings) == 1 else 1.0
    modules = {
        name: LoRAFactors(
            torch.cat([d.modules[name].A for d, _ in terms], dim=0),
            torch.cat([d.modules[name].B * (w * d.modules[name].scaling / shared) for d, w in terms], dim=1),
            shared,
        )
        for name in first.modules
    }
    rank = sum(d.rank for d, _ in terms)
    rslora = bool(first.config.get("use_rslora"))
    config = dict(first.config, r=rank, lora_alpha=shared * (math.sqrt(rank) if rslora else rank))
    inherited: dict[str, Any] = {k: first.metadata[k] for k in ("base_model", "base_model_type") if k in first.metadata}
    return LoRADirection(modules, config, {**inherited, **(metadata or {})})


def difference(pos: LoRADirection, neg: LoRADirection, metadata: dict[str, Any] | None = None) -> LoRADirection:
    """dW = pos - neg as one rank-2r LoRA with the same scaling: B = [B_pos, -B_neg], A = [A_pos; A_neg]."""
    if set(pos.modules) != set(neg.modules):
        raise AdapterError("the positive and negative adapters adapt different modules: train both with the same targets")
    if pos.rank != neg.rank or bool(pos.config.get("use_rslora")) != bool(neg.config.get("use_rslora")):
        raise AdapterError(f"mismatched adapters: ranks {pos.rank} vs {neg.rank}; train both with the same settings")
    if float(pos.config["lora_alpha"]) != float(neg.config["lora_alpha"]):
        raise AdapterError("mismatched adapters: different lora_alpha; train both with the same settings")
    ranks = {"pos": pos.rank, "neg": neg.rank, "diff": 2 * pos.rank}
    return combine([(pos, 1.0), (neg, -1.0)], {**(metadata or {}), "ranks": ranks})


def _weight_shape(module: torch.nn.Module) -> tuple[int, int]:
    """(out, in) of a linear layer; gpt2's Conv1D stores its weight as [in, out]."""
    weight = cast(torch.Tensor, module.weight)  # nn.Module's __getattr__ is typed Tensor | Module
    return (weight.shape[1], weight.shape[0]) if _is_conv1d(module) else (weight.shape[0], weight.shape[1])


def _is_conv1d(module: torch.nn.Module) -> bool:
    """gpt2's Conv1D, also when PEFT has wrapped it in a LoRA layer."""
    return type(getattr(module, "base_layer", module)).__name__ == "Conv1D"


@contextmanager
def merged(backbone: Backbone, *terms: tuple[LoRADirection, float]) -> Iterator[None]:
    """Add sum(coef * dW) into the base weights; restore them bit-exactly on exit, exceptions included."""
    originals: dict[str, torch.Tensor] = {}
    try:
        for direction, _ in terms:
            direction.check_base(backbone)
        with torch.no_grad():
            for direction, coef in terms:
                for name, factors in direction.modules.items():
                    module = backbone.model.get_submodule(name)
                    if name not in originals:
                        originals[name] = module.weight.detach().clone()
                    delta = coef * factors.delta()
                    module.weight.add_((delta.T if _is_conv1d(module) else delta).to(module.weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for name, weight in originals.items():
                backbone.model.get_submodule(name).weight.copy_(weight)


def merged_delta(backbone: Backbone, terms: Sequence[tuple[LoRADirection, float]], name: str) -> torch.Tensor:
    """The weight change of module `name` under `merged(*terms)` (for tests and analysis)."""
    module = backbone.model.get_submodule(name)
    before = module.weight.detach().clone()
    with merged(backbone, *terms):
        after = module.weight.detach().clone()
    return after - before


def factor_svd(factors: LoRAFactors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, V) with dW = U @ diag(S) @ V.T, in float64, from the factors alone (never the dense dW).

    dW = s * B @ A; with B = Qb Rb and A^T = Qa Ra (QR), dW = s * Qb (Rb Ra^T) Qa^T, so the SVD needs only
    the r x r core: U = Qb U_core, V = Qa V_core.
    """
    qb, rb = torch.linalg.qr(factors.B.double())
    qa, ra = torch.linalg.qr(factors.A.double().T)
    u, s, vh = torch.linalg.svd(factors.scaling * (rb @ ra.T), full_matrices=False)
    return qb @ u, s, qa @ vh.T


def singular_values(direction: LoRADirection) -> dict[str, torch.Tensor]:
    """Singular values of each module's dW, computed from the factors (rank r, cheap)."""
    return {name: factor_svd(f)[1].float() for name, f in direction.modules.items()}
