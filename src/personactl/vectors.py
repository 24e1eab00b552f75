"""PersonaVector: one direction per layer plus what made it, saved as safetensors.

Vectors are values: add, subtract and scale them to compose personas. The file
format is safetensors (no pickles) with the metadata in its header; plain
`.pt`/`.npy` tensors load too, for the persona_vectors repository's files.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._io import atomic_path
from ._version import __version__
from .errors import IncompatibleVectorError, VectorFileError
from .models import Backbone

TensorFormat = Literal["safetensors", "pt", "npy"]
_SUFFIX_FORMATS: dict[str, TensorFormat] = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".npy": "npy"}


@dataclass
class PersonaVector:
    """Directions [n_layers+1, hidden] (index l = hidden_states[l]) with metadata."""

    directions: torch.Tensor
    trait: str = "unknown"
    model: str = "unknown"
    method: str = "mean_diff"
    positions: str = "response_avg"
    n_samples: int = 0
    separation: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directions = self.directions.detach().float().cpu()
        if self.directions.dim() != 2:
            raise IncompatibleVectorError(f"a persona vector is [layers, hidden]; got shape {tuple(self.directions.shape)}")

    @property
    def n_layers(self) -> int:
        """Decoder blocks of the model it belongs to (rows minus the embedding row)."""
        return self.directions.shape[0] - 1

    @property
    def hidden_size(self) -> int:
        return self.directions.shape[1]

    @property
    def norms(self) -> list[float]:
        return self.directions.norm(dim=-1).tolist()

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def unit(self, layer: int) -> torch.Tensor:
        """The direction at `layer` with length 1."""
        v = self.directions[layer]
        return v / v.norm().clamp_min(1e-12)

    def fingerprint(self) -> str:
        """Content hash of the directions (first 16 hex digits of sha256)."""
        return hashlib.sha256(self.directions.numpy().tobytes()).hexdigest()[:16]

    def check_compatible(self, backbone: Backbone) -> None:
        """Refuse a vector made for a model of another shape."""
        if self.hidden_size != backbone.hidden_size:
            raise IncompatibleVectorError(
                f"vector '{self.trait}' has hidden size {self.hidden_size} but {backbone.name} has "
                f"{backbone.hidden_size}: extract it on this model (or map it with `personactl transfer`)"
            )
        if self.n_layers != backbone.n_layers:
            raise IncompatibleVectorError(
                f"vector '{self.trait}' covers {self.n_layers} layers but {backbone.name} has {backbone.n_layers}: extract it on this model"
            )

    def _combine(self, other: PersonaVector, sign: float) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        if other.directions.shape != self.directions.shape:
            raise IncompatibleVectorError(f"cannot combine vectors of shapes {tuple(self.directions.shape)} and {tuple(other.directions.shape)}")
        op = "+" if sign > 0 else "-"
        return replace(
            self,
            directions=self.directions + sign * other.directions,
            trait=f"{self.trait}{op}{other.trait}",
            method="combination",
            separation=[],
        )

    def __add__(self, other: PersonaVector) -> PersonaVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: PersonaVector) -> PersonaVector:
        return self._combine(other, -1.0)

    def __mul__(self, scale: float) -> PersonaVector:
        return replace(self, directions=self.directions * float(scale))

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> PersonaVector:
        return self * (1.0 / float(scale))

    def __neg__(self) -> PersonaVector:
        return self * -1.0

    def metadata(self) -> dict[str, str]:
        """Header metadata (safetensors stores strings only)."""
        meta = {
            "format": "personactl.persona_vector",
            "trait": self.trait,
            "model": self.model,
            "method": self.method,
            "positions": self.positions,
            "n_samples": str(self.n_samples),
            "hidden_size": str(self.hidden_size),
            "n_layers": str(self.n_layers),
            "norms": json.dumps([round(x, 6) for x in self.norms]),
            "separation": json.dumps([round(x, 6) for x in self.separation]),
            "extra": json.dumps(self.extra),
            "fingerprint": self.fingerprint(),
            "personactl_version": __version__,
            "torch_version": torch.__version__,
        }
        return meta

    def save(self, path: str | Path) -> Path:
        """Write `.safetensors` atomically; returns the path."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise VectorFileError(f"persona vectors are saved as .safetensors, not '{path.suffix}' (use save_tensor)")
        with atomic_path(path) as tmp:
            save_file({"directions": self.directions.contiguous()}, str(tmp), metadata=self.metadata())
        return path

    def save_tensor(self, path: str | Path, fmt: TensorFormat = "pt") -> Path:
        """Write the bare [layers, hidden] tensor for tools that read .pt or .npy."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if fmt == "npy":
                with open(tmp, "wb") as fh:
                    np.save(fh, self.directions.numpy())
            elif fmt == "pt":
                torch.save(self.directions.clone(), tmp)
            else:
                raise VectorFileError(f"unknown tensor format '{fmt}': use pt or npy")
        return path


def load_vector(
    path: str | Path,
    *,
    fmt: TensorFormat | None = None,
    backbone: Backbone | None = None,
    trait: str | None = None,
    layer: int | None = None,
) -> PersonaVector:
    """Load a vector file; with `backbone`, also check it fits that model.

    `fmt` defaults to the file suffix. `.pt` files load with weights_only=True,
    so a pickle that holds code is refused. A bare [hidden] tensor needs the
    `backbone` and the `layer` it belongs to.
    """
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"vector file not found: {path}")
    fmt = fmt or _SUFFIX_FORMATS.get(path.suffix)
    if fmt == "safetensors":
        vector = _load_safetensors(path)
    elif fmt in ("pt", "npy"):
        tensor = _load_tensor(path, fmt)
        if tensor.dim() == 1:
            tensor = _place_at_layer(tensor, backbone, layer, path)
        vector = PersonaVector(tensor, trait=trait or path.stem, method="imported")
    else:
        raise VectorFileError(f"cannot tell the format of {path}: pass --format safetensors, pt or npy")
    if backbone is not None:
        vector.check_compatible(backbone)
    return vector


def _load_safetensors(path: Path) -> PersonaVector:
    try:
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VectorFileError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from exc
    if "directions" not in tensors:
        raise VectorFileError(f"{path} holds no 'directions' tensor: it is not a personactl vector")
    return PersonaVector(
        tensors["directions"],
        trait=meta.get("trait", path.stem),
        model=meta.get("model", "unknown"),
        method=meta.get("method", "unknown"),
        positions=meta.get("positions", "unknown"),
        n_samples=int(meta.get("n_samples", 0)),
        separation=json.loads(meta.get("separation", "[]")),
        extra=json.loads(meta.get("extra", "{}")),
    )


def _load_tensor(path: Path, fmt: str) -> torch.Tensor:
    try:
        if fmt == "npy":
            tensor = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; our error says it all
                warnings.simplefilter("ignore")
                tensor = torch.load(path, map_location="cpu", weights_only=True)
    except (ValueError, OSError, RuntimeError, EOFError) as exc:
        raise VectorFileError(f"refusing {path}: not a plain tensor file ({str(exc).splitlines()[0][:160]})") from exc
    except Exception as exc:  # noqa: BLE001 - the unpickler raises its own error types
        raise VectorFileError(f"refusing {path}: it holds a pickle with code, not a plain tensor") from exc
    if not isinstance(tensor, torch.Tensor):
        raise VectorFileError(f"{path} holds a {type(tensor).__name__}, not a tensor [layers, hidden] or [hidden]")
    if tensor.dim() not in (1, 2):
        raise VectorFileError(f"{path} holds a tensor of shape {tuple(tensor.shape)}: expected [layers, hidden] or [hidden]")
    return tensor.float()


def _place_at_layer(tensor: torch.Tensor, backbone: Backbone | None, layer: int | None, path: Path) -> torch.Tensor:
    """Embed a single [hidden] direction as the row `layer` of a zero [layers+1, hidden]."""
    if backbone is None or layer is None:
        raise VectorFileError(f"{path} holds one [hidden] direction: give the model and the --layer it belongs to")
    backbone.check_layer(layer)
    full = torch.zeros(backbone.n_layers + 1, tensor.shape[0])
    full[layer] = tensor
    return full
