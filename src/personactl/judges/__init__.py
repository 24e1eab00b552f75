"""Judges score answers 0-100 for a trait, for coherence or for relevance to the question; see base.TraitJudge."""

from .base import RELEVANCE_RUBRIC, Judges
from .embedding import EmbeddingJudge
from .factory import make_judges
from .llm import OpenAIJudge
from .local import LocalJudge
from .relevance import EmbeddingRelevanceJudge

__all__ = ["RELEVANCE_RUBRIC", "EmbeddingJudge", "EmbeddingRelevanceJudge", "Judges", "LocalJudge", "OpenAIJudge", "make_judges"]
