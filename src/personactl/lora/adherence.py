"""How well an adapter holds its persona, and what it costs in general ability.

- Classifier adherence: the embedding judge fitted on the persona's own answers
  vs the base model's answers to the same training instructions, applied to
  answers to the held-out instructions with and without the adapter.
- LLM adherence (optional): an LLM judge reading a persona rubric built from
  the persona's name, an optional description and a few training answers.
- Perplexity of the held-out persona answers before and after.
- General-ability drift: perplexity of neutral question/answer text written by
  this team (`data/neutral_qa.jsonl`, not produced by any model, so no model
  is favoured by it) before and after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from ..expressibility import from_embedding_judge
from ..generation import chat_prompt, format_prompts, generate
from ..intervals import mean_ci
from ..judges.base import QUESTION_AND_ANSWER
from ..judges.embedding import EmbeddingJudge
from ..judges.factory import rubric_judges
from ..judges.text import RepetitionCoherenceJudge, perplexity
from ..models import Backbone
from ..verdicts import Cell, verdict_for
from .adapters import read_persona_data
from .direction import PERSONA, LoRADirection, merged

PERSONA_RUBRIC = (
    """You are judging how strongly an AI assistant's answer speaks in the persona "{persona}".{description}

Examples of answers in this persona:
{examples}

"""
    + QUESTION_AND_ANSWER
    + """

Rate from 0 to 100 how strongly the answer shows this persona's voice and manner, whatever its correctness: 0 means no trace of the persona, 50 means clear but partial traces, 100 means fully in persona. Respond with a number between 0 and 100 and nothing else."""
)


def persona_rubric(persona: str, examples: Sequence[str], description: str | None = None) -> str:
    """The LLM-judge rubric of a persona: its name, an optional description and example answers."""
    shown = "\n".join(f"- {' '.join(e.split())[:300]}" for e in examples)
    return (
        PERSONA_RUBRIC.replace("{persona}", persona)
        .replace("{description}", f" The persona: {description}" if description else "")
        .replace("{examples}", shown)
    )


def neutral_text() -> tuple[list[str], list[str]]:
    """Everyday questions with plain answers written by this team: the general-ability yardstick."""
    data = read_persona_data(Path(str(resources.files("personactl") / "data" / "neutral_qa.jsonl")))
    return data.questions, data.answers


def _mean(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def _scored(scores: list[float | None]) -> dict[int, float]:
    """{answer index: score} of the answers the judge scored."""
    return {i: s for i, s in enumerate(scores) if s is not None}


def adherence(
    backbone: Backbone,
    adapter: str | Path,
    data_path: str | Path,
    *,
    n_fit: int = 48,
    max_new_tokens: int = 48,
    judge_spec: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Adherence and drift numbers for one adapter (see the module docstring).

    `judge_spec` ("openai:MODEL" or "local:MODEL") adds LLM-judged adherence with the
    persona rubric; `description` says in words what the persona is."""
    card = json.loads((Path(adapter) / PERSONA).read_text(encoding="utf-8"))
    direction = LoRADirection.load(adapter)
    data = read_persona_data(data_path)
    held = set(card.get("val_indices") or range(len(data.questions) - 12, len(data.questions)))
    train_idx = [i for i in range(len(data.questions)) if i not in held][:n_fit]
    val_idx = sorted(held)
    llm_judge = None
    if judge_spec is not None:  # built first, so a bad spec fails before minutes of generation
        rubric = persona_rubric(card.get("name", "persona"), [data.answers[i] for i in train_idx[:3]], description)
        (llm_judge,) = rubric_judges(judge_spec, (rubric, ":persona"))
    ask = lambda idx: [chat_prompt(data.questions[i]) for i in idx]  # noqa: E731
    answer = partial(generate, backbone, max_new_tokens=max_new_tokens, batch_size=32)
    base_train = answer(ask(train_idx))
    judge = EmbeddingJudge.fit([data.answers[i] for i in train_idx], base_train, trait=card.get("name", "persona"))
    val_questions = [data.questions[i] for i in val_idx]
    base_val = answer(ask(val_idx))
    neutral_q, neutral_a = neutral_text()
    neutral_prompts = format_prompts(backbone, [chat_prompt(q) for q in neutral_q])
    persona_prompts = format_prompts(backbone, ask(val_idx))
    persona_answers = [data.answers[i] for i in val_idx]
    ppl_before = _mean(perplexity(backbone, persona_prompts, persona_answers))
    neutral_before = _mean(perplexity(backbone, neutral_prompts, neutral_a))
    with merged(backbone, (direction, 1.0)):
        adapted_val = answer(ask(val_idx))
        ppl_after = _mean(perplexity(backbone, persona_prompts, persona_answers))
        neutral_after = _mean(perplexity(backbone, neutral_prompts, neutral_a))
    base_scores, adapted_scores = judge.score(val_questions, base_val), judge.score(val_questions, adapted_val)
    base_score, adapted_score = mean_ci(base_scores), mean_ci(adapted_scores)
    coherence = RepetitionCoherenceJudge()
    verdict = verdict_for(
        "adapter",
        None,
        [
            Cell(c, *mean_ci(scores), _mean(coherence.score(val_questions, answers)), _scored(scores))
            for c, scores, answers in ((0.0, base_scores, base_val), (1.0, adapted_scores, adapted_val))
        ],
        expressed=from_embedding_judge(card.get("name", "persona"), judge, len(train_idx)).expressed,
    )
    llm: dict[str, Any] = {}
    if llm_judge is not None:
        llm = {
            "llm_judge": llm_judge.name,
            "llm_adherence_base": mean_ci(llm_judge.score(val_questions, base_val)),
            "llm_adherence_adapter": mean_ci(llm_judge.score(val_questions, adapted_val)),
        }
    return {
        "adapter": card.get("name"),
        "judge_heldout_accuracy": judge.heldout_accuracy,
        "n_eval": len(val_idx),
        "adherence_base": base_score,
        "adherence_adapter": adapted_score,
        "verdict": verdict.to_dict(),
        "persona_perplexity": {"before": ppl_before, "after": ppl_after},
        "neutral_perplexity": {"before": neutral_before, "after": neutral_after, "change": neutral_after / neutral_before - 1},
        **llm,
        "examples": [{"question": q, "base": b, "adapter": a} for q, b, a in list(zip(val_questions, base_val, adapted_val))[:3]],
    }
