"""Build the trait and coherence judges (and, when asked for, the relevance judge) from a `--judge` spec.

- `embed` (default, offline): the embedding classifier fitted on the
  extraction answers, with the repetition-based coherence score and the
  embedding relevance score (`relevance.EmbeddingRelevanceJudge`);
- `local:MODEL`: the rubric prompts with logprob weighting on a local model;
- `openai:MODEL`: any OpenAI-compatible endpoint (base URL and key from the
  environment), with a disk cache.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ..traits import AnyTrait, Trait
from .base import COHERENCE_RUBRIC, RELEVANCE_RUBRIC, Judges, TraitJudge
from .llm import JudgeError, parse_judge_spec


def make_judges(
    spec: str,
    trait: AnyTrait,
    positives: Sequence[str] = (),
    negatives: Sequence[str] = (),
    groups: Sequence[Hashable] | None = None,
    relevance_questions: Sequence[str] | None = None,
) -> Judges:
    """Judges for `trait`; the embedding judge is fitted on `positives` vs `negatives`, pair i answering question
    `groups[i]` (extraction.question_groups), so its out-of-fold scores hold whole questions out. With
    `relevance_questions` (the questions the answers will answer) a relevance judge too: offline, their
    embedding ranks; with an LLM judge, RELEVANCE_RUBRIC."""
    kind, model = parse_judge_spec(spec)
    if kind == "embed":
        from .embedding import EmbeddingJudge  # noqa: PLC0415
        from .relevance import EmbeddingRelevanceJudge  # noqa: PLC0415
        from .text import RepetitionCoherenceJudge  # noqa: PLC0415

        relevance = None if relevance_questions is None else EmbeddingRelevanceJudge(relevance_questions)
        return Judges(EmbeddingJudge.fit(positives, negatives, trait=trait.name, groups=groups), RepetitionCoherenceJudge(), relevance)
    if not isinstance(trait, Trait):
        raise JudgeError(f"the {kind} judge needs a trait with a rubric; '{trait.name}' is plain contrastive texts: use --judge embed")
    rubrics = [(trait.rubric, ""), (COHERENCE_RUBRIC, ":coherence")]
    if relevance_questions is not None:
        rubrics.append((RELEVANCE_RUBRIC, ":relevance"))
    return Judges(*rubric_judges(spec, *rubrics))


def rubric_judges(spec: str, *rubrics: tuple[str, str]) -> list[TraitJudge]:
    """One LLM judge (`openai:MODEL` or `local:MODEL`) per (rubric, name suffix); they share one
    loaded local model, or one disk cache."""
    kind, model = parse_judge_spec(spec)
    if kind == "embed":
        raise JudgeError("a rubric needs an LLM judge: use 'openai:MODEL' or 'local:MODEL'")
    if kind == "local":
        from ..models import load_model  # noqa: PLC0415
        from .local import LocalJudge  # noqa: PLC0415

        judge_model = load_model(model)
        return [LocalJudge(judge_model, rubric, name=f"local:{model}{suffix}") for rubric, suffix in rubrics]
    from .cache import JudgeCache  # noqa: PLC0415
    from .llm import OpenAIJudge  # noqa: PLC0415

    cache = JudgeCache()
    return [OpenAIJudge(model, rubric, name=f"openai:{model}{suffix}", cache=cache) for rubric, suffix in rubrics]
