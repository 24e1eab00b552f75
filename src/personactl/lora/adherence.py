"""How well an adapter holds its persona, and what it costs in general ability.

- Classifier adherence: the embedding judge fitted on the persona's own answers
  vs the base model's answers to the same training instructions, applied to
  answers to the held-out instructions with and without the adapter.
- Perplexity of the held-out persona answers before and after.
- General-ability drift: perplexity of neutral text (the base model's own
  answers to neutral questions) before and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluate import bootstrap_ci
from ..generation import chat_prompt, format_prompts, generate
from ..judges.embedding import EmbeddingJudge
from ..judges.text import perplexity
from ..models import Backbone
from ..traits import load_trait
from .adapters import read_persona_data
from .direction import PERSONA, LoRADirection, merged

NEUTRAL_TRAIT = "pirate"  # its held-out questions are everyday ones; the base model's answers are the neutral text


def _mean(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def adherence(backbone: Backbone, adapter: str | Path, data_path: str | Path, *, n_fit: int = 48, max_new_tokens: int = 48) -> dict[str, Any]:
    """Adherence and drift numbers for one adapter (see the module docstring)."""
    card = json.loads((Path(adapter) / PERSONA).read_text(encoding="utf-8"))
    direction = LoRADirection.load(adapter)
    data = read_persona_data(data_path)
    held = set(card.get("val_indices") or range(len(data.questions) - 12, len(data.questions)))
    train_idx = [i for i in range(len(data.questions)) if i not in held][:n_fit]
    val_idx = sorted(held)
    ask = lambda idx: [chat_prompt(data.questions[i]) for i in idx]  # noqa: E731
    settings = dict(max_new_tokens=max_new_tokens, batch_size=32)
    base_train = generate(backbone, ask(train_idx), **settings)
    judge = EmbeddingJudge.fit([data.answers[i] for i in train_idx], base_train, trait=card.get("name", "persona"))
    val_questions = [data.questions[i] for i in val_idx]
    base_val = generate(backbone, ask(val_idx), **settings)
    neutral_q = load_trait(NEUTRAL_TRAIT).eval_questions
    neutral_prompts = format_prompts(backbone, [chat_prompt(q) for q in neutral_q])
    neutral_text = generate(backbone, neutral_prompts, **settings)
    persona_prompts = format_prompts(backbone, ask(val_idx))
    persona_answers = [data.answers[i] for i in val_idx]
    ppl_before = _mean(perplexity(backbone, persona_prompts, persona_answers))
    neutral_before = _mean(perplexity(backbone, neutral_prompts, neutral_text))
    with merged(backbone, (direction, 1.0)):
        adapted_val = generate(backbone, ask(val_idx), **settings)
        ppl_after = _mean(perplexity(backbone, persona_prompts, persona_answers))
        neutral_after = _mean(perplexity(backbone, neutral_prompts, neutral_text))
    base_score, adapted_score = bootstrap_ci(judge.score(val_questions, base_val)), bootstrap_ci(judge.score(val_questions, adapted_val))
    return {
        "adapter": card.get("name"), "judge_heldout_accuracy": judge.heldout_accuracy, "n_eval": len(val_idx),
        "adherence_base": base_score, "adherence_adapter": adapted_score,
        "persona_perplexity": {"before": ppl_before, "after": ppl_after},
        "neutral_perplexity": {"before": neutral_before, "after": neutral_after, "change": neutral_after / neutral_before - 1},
        "examples": [{"question": q, "base": b, "adapter": a} for q, b, a in list(zip(val_questions, base_val, adapted_val))[:3]],
    }
