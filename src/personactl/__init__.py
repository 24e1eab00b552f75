"""personactl: find, measure, steer and move the character traits of language models."""

__version__ = "0.1.0"

from .activations import collect as collect_activations
from .activations import hidden_states
from .aggregators import METHODS
from .errors import (
    ArchitectureError,
    IncompatibleVectorError,
    LayerError,
    ModelLoadError,
    PersonactlError,
    SteeringError,
    TraitError,
    VectorFileError,
)
from .extraction import ContrastivePair, ExtractionSettings, extract, generate_pairs, load_pairs, save_pairs, vector_from_pairs
from .generation import chat_prompt, generate
from .models import DEFAULT_MODEL, EMBEDDED_MODELS, Backbone, from_model, load_model
from .monitor import project
from .steering import SteeringTerm, steer
from .traits import ContrastiveTexts, Trait, builtin_traits, load_trait, parse_trait
from .vectors import PersonaVector, load_vector

__all__ = [
    "ArchitectureError",
    "Backbone",
    "ContrastivePair",
    "ContrastiveTexts",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "ExtractionSettings",
    "IncompatibleVectorError",
    "LayerError",
    "METHODS",
    "ModelLoadError",
    "PersonaVector",
    "PersonactlError",
    "SteeringError",
    "SteeringTerm",
    "Trait",
    "TraitError",
    "VectorFileError",
    "builtin_traits",
    "chat_prompt",
    "collect_activations",
    "extract",
    "from_model",
    "generate",
    "generate_pairs",
    "hidden_states",
    "load_model",
    "load_pairs",
    "load_trait",
    "parse_trait",
    "project",
    "save_pairs",
    "steer",
    "vector_from_pairs",
]
