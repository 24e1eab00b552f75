"""Judges score answers 0-100 for a trait or for coherence; see base.TraitJudge."""

from .base import Judges
from .embedding import EmbeddingJudge
from .factory import make_judges
from .llm import OpenAIJudge
from .local import LocalJudge

__all__ = ["EmbeddingJudge", "Judges", "LocalJudge", "OpenAIJudge", "make_judges"]
