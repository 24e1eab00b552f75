"""The personas a server can use, resolved by name inside its configured folders only (a name is never a path)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, Field

from ..errors import PersonactlError
from ..lora.adapters import list_adapters
from ..lora.chat import default_layer
from ..models import Backbone
from ..traits import builtin_traits, load_trait
from ..vectors import PersonaVector, load_vector

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class UnknownPersona(PersonactlError):
    """A persona name the server does not have (or that is not a plain name)."""


class VectorUse(BaseModel):
    name: str
    coef: float = Field(1.0, ge=-50, le=50)
    layers: Optional[list[int]] = None


class PersonaRequest(BaseModel):
    """The `persona` field of a request: vectors with coefficients, an adapter (or a blend), positions, meter."""

    vectors: list[VectorUse] = Field(default_factory=list)
    adapter: Union[str, dict[str, dict[str, float]], None] = None
    positions: Literal["all", "prompt", "response"] = "response"
    meter: bool = False


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or ".." in name:
        raise UnknownPersona(f"'{name}' is not a persona name: use letters, digits, '_', '-', '.' (never a path)")
    return name


@dataclass
class PersonaLibrary:
    """Vectors (`NAME.safetensors`) and adapters (folders with a persona card) under the server's folders."""

    backbone: Backbone
    vectors_dir: Path | None = None
    adapters_dir: Path | None = None
    _vectors: dict[str, PersonaVector] = field(default_factory=dict)

    def vector_path(self, name: str) -> Path:
        check_name(name)
        if self.vectors_dir is None:
            raise UnknownPersona(f"no persona vector '{name}': this server has no vector folder (start it with --vectors DIR)")
        path = self.vectors_dir / f"{name}.safetensors"
        if not path.is_file() or path.resolve().parent != self.vectors_dir.resolve():
            raise UnknownPersona(f"no persona vector '{name}' (known: {', '.join(self.vector_names()) or 'none'})")
        return path

    def vector(self, name: str) -> PersonaVector:
        if name not in self._vectors:
            self._vectors[name] = load_vector(self.vector_path(name), backbone=self.backbone)
        return self._vectors[name]

    def add_vector(self, name: str, vector: PersonaVector) -> None:
        """Make a vector usable by name (e.g. one just extracted); saved into the vector folder when there is one."""
        check_name(name)
        if self.vectors_dir is not None:
            vector.save(self.vectors_dir / f"{name}.safetensors")
        self._vectors[name] = vector

    def vector_names(self) -> list[str]:
        on_disk = sorted(p.stem for p in self.vectors_dir.glob("*.safetensors")) if self.vectors_dir else []
        return sorted(set(on_disk) | set(self._vectors))

    def layer(self, name: str) -> int:
        """The recommended layer: NAME.layers.json beside the vector, else the folder's layers.json, else 2/3 of the depth."""
        if self.vectors_dir is not None:
            own = self.vectors_dir / f"{name}.layers.json"
            if own.is_file():
                return int(json.loads(own.read_text(encoding="utf-8"))["chosen"])
            path = self.vectors_dir / f"{name}.safetensors"
            if path.is_file():
                return default_layer(path, self.backbone.n_layers, lowest=2)
        return max(2, round(2 * self.backbone.n_layers / 3))

    def coefficients(self, name: str, layer: int) -> dict:
        """Slider range and starting coefficient: from the vector's sweep (NAME.summary.csv beside it) when there is one.

        The range is the swept coefficients at `layer`; the start is the one with the highest judged trait among
        those whose coherence stayed at or above 50. Without a sweep: -4..4, starting at 2 (a guess, and said so).
        """
        path = self.vectors_dir / f"{name}.summary.csv" if self.vectors_dir else None
        rows = []
        if path is not None and path.is_file():
            with path.open(encoding="utf-8", newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("method") == "vector" and r.get("layer") == str(layer)]
        if not rows:
            return {"coef_range": [-4.0, 4.0], "coef": 2.0, "coef_source": "default (no sweep beside the vector)"}
        coefs = [float(r["coef"]) for r in rows]
        scored = [r for r in rows if r.get("trait_mean")]
        coherent = [r for r in scored if r.get("coherence_mean") and float(r["coherence_mean"]) >= 50] or scored
        start = float(max(coherent, key=lambda r: float(r["trait_mean"]))["coef"]) if coherent else max(coefs)
        return {"coef_range": [min(coefs), max(coefs)], "coef": start, "coef_source": f"sweep in {path.name}"}

    def adapter_path(self, name: str) -> Path:
        check_name(name)
        if self.adapters_dir is None:
            raise UnknownPersona(f"no adapter '{name}': this server has no adapter folder (start it with --adapters DIR)")
        path = self.adapters_dir / name
        if not (path / "adapter_config.json").is_file() or path.resolve().parent != self.adapters_dir.resolve():
            raise UnknownPersona(f"no adapter '{name}' (known: {', '.join(a['name'] for a in self.adapters()) or 'none'})")
        return path

    def adapters(self) -> list[dict]:
        if self.adapters_dir is None:
            return []
        return [{"name": Path(a["path"]).name, "description": a.get("description", "")} for a in list_adapters(self.adapters_dir)]

    def describe(self) -> dict:
        """What GET /personas returns: vectors (recommended layer and coefficient range), adapters, built-in traits."""
        vectors = []
        for name in self.vector_names():
            vector = self.vector(name)
            layer = self.layer(name)
            vectors.append({"name": name, "trait": vector.trait, "model": vector.model, "layers": list(range(1, vector.n_layers + 1)),
                            "layer": layer, **self.coefficients(name, layer)})
        traits = [{"name": t, "description": load_trait(t).description} for t in builtin_traits()]
        return {"vectors": vectors, "adapters": self.adapters(), "traits": traits}

    def check(self, persona: PersonaRequest, max_personas: int) -> None:
        """Every name resolves and the request stays within the persona cap (before it queues)."""
        if len(persona.vectors) > max_personas:
            raise UnknownPersona(f"{len(persona.vectors)} vectors in one request: at most {max_personas}")
        for use in persona.vectors:
            vector = self.vector(use.name)
            for layer in use.layers or []:
                if not 1 <= layer <= vector.n_layers:
                    raise UnknownPersona(f"layer {layer} is out of range for '{use.name}': 1..{vector.n_layers}")
        if isinstance(persona.adapter, str):
            self.adapter_path(persona.adapter)
        elif isinstance(persona.adapter, dict):
            blend = persona.adapter.get("blend") or {}
            if not blend or len(blend) > max_personas:
                raise UnknownPersona(f"an adapter blend needs 1..{max_personas} adapters: {{\"blend\": {{\"a\": 0.5, \"b\": 0.5}}}}")
            for name in blend:
                self.adapter_path(name)
