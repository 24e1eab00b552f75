"""The personas a server can use, resolved by name inside its configured folders only (a name is never a path)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..capping import DEFAULT_CAP, CapRangeError, cap_bounds
from ..errors import PersonactlError
from ..extraction import stored_projections
from ..lora import PERSONA, default_layer, read_card
from ..models import Backbone
from ..traits import builtin_traits, load_trait
from ..vectors import PersonaVector, load_vector

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_COEF = 50.0  # one vector's |coef|
MAX_BLEND_WEIGHT = 4.0  # one adapter's |weight| in a blend: 1 is the adapter as trained


class UnknownPersona(PersonactlError):
    """A persona the server cannot use: an unknown, broken or non-plain name, or steering beyond its limits."""


class VectorUse(BaseModel):
    """One vector of a request: its coefficient and layers (default: the vector's recommended layer)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    coef: float = Field(1.0, ge=-MAX_COEF, le=MAX_COEF, allow_inf_nan=False)
    layers: list[int] | None = None


class CapUse(BaseModel):
    """One capped vector of a request: the range its projection is kept in (`capping.parse_cap_at`, e.g. neg-p90 or
    -2:3.5) over a band of layers (default: the vector's recommended layer)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    at: str = DEFAULT_CAP
    layers: list[int] | None = None


class PersonaRequest(BaseModel):
    """The `persona` field of a request: vectors with coefficients, caps, an adapter (or a blend), positions, meter.

    Unknown keys are refused (a misspelt key would otherwise steer nothing without a word).
    """

    model_config = ConfigDict(extra="forbid")

    vectors: list[VectorUse] = Field(default_factory=list)
    cap: list[CapUse] = Field(default_factory=list)
    adapter: str | dict[str, dict[str, float]] | None = None
    positions: Literal["all", "prompt", "response"] = "response"
    meter: bool = False

    @field_validator("adapter", mode="before")
    @classmethod
    def _blend(cls, value: object) -> object:
        """A blend is {"blend": {name: weight}} with finite weights within +-MAX_BLEND_WEIGHT."""
        if not isinstance(value, dict):
            return value
        if set(value) != {"blend"} or not isinstance(value["blend"], dict):
            raise ValueError('an adapter blend is {"blend": {"name": weight, ...}} and nothing else')
        for name, weight in value["blend"].items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or abs(weight) > MAX_BLEND_WEIGHT:
                raise ValueError(f"the blend weight of '{name}' must be a number from {-MAX_BLEND_WEIGHT:g} to {MAX_BLEND_WEIGHT:g}")
        return value


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or ".." in name:
        raise UnknownPersona(f"'{name}' is not a persona name: use letters, digits, '_', '-', '.' (never a path)")
    return name


@dataclass
class PersonaLibrary:
    """Vectors (`NAME.safetensors`) and adapters (folders with a persona card) under the server's folders.

    A name is a plain file or folder name, so a request never reaches outside the folders; a symbolic link the
    operator put in a folder is followed (listed and usable alike), and its side files (NAME.layers.json,
    NAME.summary.csv) are read beside the link. A file that cannot be used is reported by name, never by path.
    """

    backbone: Backbone
    vectors_dir: Path | None = None
    adapters_dir: Path | None = None
    _vectors: dict[str, PersonaVector] = field(default_factory=dict)

    def vector_path(self, name: str) -> Path:
        check_name(name)
        if self.vectors_dir is None:
            raise UnknownPersona(f"no persona vector '{name}': this server has no vector folder (start it with --vectors DIR)")
        path = self.vectors_dir / f"{name}.safetensors"
        if not path.is_file():
            raise UnknownPersona(f"no persona vector '{name}' (known: {', '.join(self.vector_names()) or 'none'})")
        return path

    def vector(self, name: str) -> PersonaVector:
        if name not in self._vectors:
            path = self.vector_path(name)
            try:
                self._vectors[name] = load_vector(path, backbone=self.backbone)
            except PersonactlError as exc:
                raise UnknownPersona(f"persona vector '{name}' cannot be used: {str(exc).replace(str(path), path.name)}") from exc
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
            try:
                if own.is_file():
                    return int(json.loads(own.read_text(encoding="utf-8"))["chosen"])
                path = self.vectors_dir / f"{name}.safetensors"
                if path.is_file():
                    return default_layer(path, self.backbone.n_layers, lowest=2)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UnknownPersona(f"persona vector '{name}' has an unreadable layers.json (no integer 'chosen')") from exc
        return max(2, round(2 * self.backbone.n_layers / 3))

    def coefficients(self, name: str, layer: int) -> dict:
        """Slider range and starting coefficient: from the vector's sweep (NAME.summary.csv beside it) when there is one.

        The range is the swept coefficients at `layer`; the start is the one with the highest judged trait among
        those whose coherence stayed at or above 50. Without a sweep: -4..4, starting at 2 (a guess, and said so).
        """
        path = self.vectors_dir / f"{name}.summary.csv" if self.vectors_dir else None
        if path is None or not path.is_file():
            return {"coef_range": [-4.0, 4.0], "coef": 2.0, "coef_source": "default (no sweep beside the vector)"}
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("method") == "vector" and r.get("layer") == str(layer)]
            coefs = [float(r["coef"]) for r in rows]
            scored = [r for r in rows if r.get("trait_mean")]
            coherent = [r for r in scored if r.get("coherence_mean") and float(r["coherence_mean"]) >= 50] or scored
            start = float(max(coherent, key=lambda r: float(r["trait_mean"]))["coef"]) if coherent else max(coefs, default=2.0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnknownPersona(f"{path.name} is not a readable sweep summary") from exc
        if not coefs:
            return {"coef_range": [-4.0, 4.0], "coef": 2.0, "coef_source": f"default ({path.name} has no sweep at layer {layer})"}
        return {"coef_range": [min(coefs), max(coefs)], "coef": start, "coef_source": f"sweep in {path.name}"}

    def adapter_path(self, name: str) -> Path:
        check_name(name)
        if self.adapters_dir is None:
            raise UnknownPersona(f"no adapter '{name}': this server has no adapter folder (start it with --adapters DIR)")
        path = self.adapters_dir / name
        if not (path / "adapter_config.json").is_file():
            raise UnknownPersona(f"no adapter '{name}' (known: {', '.join(self.adapter_names()) or 'none'})")
        return path

    def adapter_names(self) -> list[str]:
        return sorted(card.parent.name for card in self.adapters_dir.glob(f"*/{PERSONA}")) if self.adapters_dir else []

    def adapter(self, name: str) -> dict:
        """An adapter's name and description (its persona card)."""
        path = self.adapter_path(name)
        try:
            card = read_card(path)
        except PersonactlError as exc:
            raise UnknownPersona(f"adapter '{name}' cannot be used: {str(exc).replace(str(path), name)}") from exc
        return {"name": name, "description": card.get("description", "")}

    def describe_vector(self, name: str) -> dict:
        """A vector as the page needs it: layers, recommended layer, coefficient range, and where the meter is in answer units."""
        vector, layer = self.vector(name), self.layer(name)
        stored = stored_projections(vector)
        return {
            "name": name,
            "trait": vector.trait,
            "model": vector.model,
            "layers": list(range(1, vector.n_layers + 1)),
            "layer": layer,
            **self.coefficients(name, layer),
            "meter_layers": list(stored[0]) if stored else [],
        }

    def describe(self) -> dict:
        """What GET /personas returns: usable vectors and adapters, the unusable ones by name and reason, built-in traits.

        `meter_layers` lists the layers where a vector's meter reads in answer units (+1 the mean trait answer of its
        extraction, -1 the mean non-trait answer); elsewhere the meter is the raw projection.
        """
        listing: dict[str, list] = {"vectors": [], "adapters": [], "broken": []}
        for kind, names, entry in (("vector", self.vector_names(), self.describe_vector), ("adapter", self.adapter_names(), self.adapter)):
            for name in names:
                try:
                    listing[f"{kind}s"].append(entry(name))
                except UnknownPersona as exc:
                    listing["broken"].append({"name": name, "kind": kind, "reason": str(exc)})
        traits = [{"name": t, "description": load_trait(t).description} for t in builtin_traits()]
        return {**listing, "traits": traits}

    def _checked_layers(self, name: str, layers: list[int] | None) -> list[int]:
        """The layers a request gives for vector `name` (default: its recommended one), each in range."""
        vector = self.vector(name)
        layers = layers or [self.layer(name)]
        if len(layers) > vector.n_layers:
            raise UnknownPersona(f"'{name}' lists {len(layers)} layers: the model has {vector.n_layers}")
        for layer in layers:
            if not 1 <= layer <= vector.n_layers:
                raise UnknownPersona(f"layer {layer} is out of range for '{name}': 1..{vector.n_layers}")
        return layers

    def check(self, persona: PersonaRequest, max_personas: int, max_steering: float = MAX_COEF) -> None:
        """Every name resolves, each (vector, layer) is given once, and the request stays within the caps (before it queues).

        `max_steering` caps the summed |coef| of the request's vectors at each layer, so repeating a vector (or
        stacking several) cannot steer harder than the cap.
        """
        if len(persona.vectors) + len(persona.cap) > max_personas:
            raise UnknownPersona(f"{len(persona.vectors) + len(persona.cap)} vectors and caps in one request: at most {max_personas}")
        for cap in persona.cap:
            try:
                cap_bounds(self.vector(cap.name), self._checked_layers(cap.name, cap.layers), cap.at)
            except CapRangeError as exc:
                raise UnknownPersona(f"cap of '{cap.name}': {exc}") from exc
        strength: dict[int, float] = {}
        given: set[tuple[str, int]] = set()
        for use in persona.vectors:
            for layer in self._checked_layers(use.name, use.layers):
                if (use.name, layer) in given:
                    raise UnknownPersona(f"'{use.name}' is given twice at layer {layer}: give each vector and layer once, with one coefficient")
                given.add((use.name, layer))
                strength[layer] = strength.get(layer, 0.0) + abs(use.coef)
        layer, total = max(strength.items(), key=lambda item: item[1], default=(0, 0.0))
        if total > max_steering:
            raise UnknownPersona(f"the |coef| of this request's vectors sum to {total:g} at layer {layer}: at most {max_steering:g} per layer")
        if isinstance(persona.adapter, str):
            self.adapter_path(persona.adapter)
        elif isinstance(persona.adapter, dict):
            blend = persona.adapter["blend"]
            if not blend or len(blend) > max_personas:
                raise UnknownPersona(f'an adapter blend needs 1..{max_personas} adapters: {{"blend": {{"a": 0.5, "b": 0.5}}}}')
            for name in blend:
                self.adapter_path(name)
