"""What a vector file has to say so that another tool applies it as it was meant: the convention.

The same numbers steer differently when one of these differs: which module's output a layer index names
(the hook site and the numbering), whether the vector is added or projected out (the operation), whether it
is rescaled (the normalisation), and which model it belongs to. Every file `export_vector` writes records
all of them as one JSON object, and `import_vector` checks what a file records against the model.

A model is named by a fingerprint of its configuration: the first 16 hex digits of the sha256 of the JSON
of {model_type (as its family, see `family`), hidden_size, num_hidden_layers, vocab_size}, keys sorted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .._version import __version__
from ..errors import PersonactlError
from ..models import Backbone

Numbering = Literal["hidden_states", "block"]

# Where a file's convention is stored: a GGUF key, a safetensors header key, a dict key, a sidecar's suffix.
RECORD_KEY = "personactl.convention_json"

# What personactl writes and applies: the recorded value, and its meaning (written beside it in every file).
MEANINGS = {
    "hook": ("block_output", "the residual stream at the output of a decoder block (HF model.layers[N], what a forward hook on it sees)"),
    "operation": ("add", "h <- h + v at every position, v already multiplied by coef"),
    "normalisation": ("none", "v as stored, not made unit length; the steered hidden state is not rescaled"),
}
NUMBERINGS = {
    "hidden_states": "index L = HF hidden_states[L] = the output of decoder block L-1 (0 = the embeddings) = personactl layer L",
    "block": "index N = the output of decoder block N (0-based, HF model.layers[N]) = HF hidden_states[N+1] = personactl layer N+1",
}

# HF model_type -> llama.cpp architecture name, where they differ (convert_hf_to_gguf.py's choices). repeng writes
# the first, llama.cpp's own tools the second: both name the same family of models.
_LLAMA_CPP_NAMES = {
    "mistral": "llama",
    "mixtral": "llama",
    "gemma3_text": "gemma3",
    "gpt_neox": "gptneox",
    "phi": "phi2",
    "gpt_bigcode": "starcoder",
    "cohere": "command-r",
    "deepseek_v2": "deepseek2",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
}


class PortableFormatError(PersonactlError):
    """A vector that cannot be written in, or read from, another tool's format for this model."""


def family(model_type: str) -> str:
    """The llama.cpp architecture name of an HF `model_type`; an architecture name stays itself (gemma3_text -> gemma3)."""
    return _LLAMA_CPP_NAMES.get(model_type, model_type)


def model_config(backbone: Backbone) -> dict[str, Any]:
    """The configuration fields the fingerprint covers, read from the loaded model (not from config.json, whose
    layout differs between a text model and its multimodal wrapper)."""
    return {
        "model_type": family(backbone.model_type),
        "hidden_size": backbone.hidden_size,
        "num_hidden_layers": backbone.n_layers,
        "vocab_size": int(backbone.model.get_input_embeddings().num_embeddings),
    }


def config_fingerprint(config: dict[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the config fields as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Convention:
    """Everything a reader needs to apply a vector file as its writer meant (stored as JSON in the file)."""

    format: str
    numbering: Numbering
    layers: list[int]  # the personactl layers written (hidden_states indices), whatever the file's own numbering
    coef: float = 1.0
    trait: str = "unknown"
    model: str = "unknown"
    model_type: str = ""  # as transformers names it (the config below holds its family)
    config: dict[str, Any] = field(default_factory=dict)
    vector_fingerprint: str = ""
    hook: str = MEANINGS["hook"][0]
    operation: str = MEANINGS["operation"][0]
    normalisation: str = MEANINGS["normalisation"][0]
    writer: str = f"personactl {__version__}"

    @property
    def fingerprint(self) -> str:
        """The model's config fingerprint ('' when the model was not known when writing)."""
        return config_fingerprint(self.config) if self.config else ""

    def to_json(self) -> str:
        record: dict[str, Any] = asdict(self)
        record["config_fingerprint"] = self.fingerprint
        record["numbering_means"] = NUMBERINGS[self.numbering]
        record.update({f"{key}_means": meaning for key, (_, meaning) in MEANINGS.items()})
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Convention:
        """The convention a file records; a record that is not one is a one-line error naming `where`."""
        try:
            record = json.loads(text)
            convention = cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as exc:
            raise PortableFormatError(f"{where}: its recorded convention is not readable ({str(exc).splitlines()[0][:120]})") from exc
        if convention.numbering not in NUMBERINGS:
            raise PortableFormatError(f"{where}: unknown layer numbering '{convention.numbering}' in its recorded convention")
        return convention

    def unsupported(self) -> str | None:
        """The first recorded choice personactl does not apply (e.g. operation 'project'), or None."""
        for key, (value, _) in MEANINGS.items():
            if getattr(self, key) != value:
                return f"its {key} is '{getattr(self, key)}', personactl applies only '{value}'"
        return None
