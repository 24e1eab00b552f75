"""Which layer to steer: separation of projections, and the measured steering effect.

Separation (AUROC and Cohen's d of positive vs negative projections) says
where the trait is readable; the measured effect (judged trait at `coef` minus
at 0, from one short batched sweep over all candidate layers) says where
steering works. `--layer auto` picks the layer with the largest measured effect
among those whose steered answers stay coherent, and records why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._io import write_text_atomic
from .judges.base import Judges
from .generation import chat_prompt, generate, record_seed
from .methods import GenerationSettings
from .aggregators import separation
from .models import Backbone
from .monitor import projections
from .progress import progress_bar
from .steering import SteeringTerm
from .vectors import PersonaVector

MIN_COHERENCE = 50.0
PROBE_COEF = 2.0  # the coefficient each candidate layer is tried at


@dataclass
class LayerScore:
    layer: int
    auroc: float
    cohens_d: float
    effect: float | None = None
    coherence: float | None = None


PROBE_QUESTIONS = 4  # questions the effect per layer is measured on


@dataclass
class LayerSelection:
    rows: list[LayerScore]
    chosen: int
    reason: str
    probe: str = ""  # which questions measured the effect (never the ones the sweep scores)

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(asdict(self), indent=2))


def probe_questions(extraction_questions: Sequence[str], n_used: int | None, count: int = PROBE_QUESTIONS) -> tuple[list[str], str]:
    """Questions to measure the effect per layer on, and a note saying which they are.

    They come from the extraction questions, so the layer is never chosen on the
    held-out questions the sweep then scores (that would bias the chosen layer's
    effect upward). Unused extraction questions are preferred when enough remain.
    """
    questions = list(extraction_questions)
    used = len(questions) if n_used is None else min(n_used, len(questions))
    if len(questions) - used >= count:
        return questions[used : used + count], f"measured on extraction questions {used + 1}-{used + count}, not used to extract the vector and never scored by the sweep"
    start = max(0, len(questions) - count)
    return questions[start:], f"measured on extraction questions {start + 1}-{len(questions)}, never scored by the sweep"


def separation_scores(pos: torch.Tensor, neg: torch.Tensor, vector: PersonaVector, layers: Sequence[int]) -> list[LayerScore]:
    """AUROC and Cohen's d of pos vs neg projections per layer."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    layers = list(layers)
    p, n = projections(pos, vector, layers), projections(neg, vector, layers)
    cohens_d = separation(pos[:, layers], neg[:, layers], vector.directions[layers])
    labels = np.r_[np.ones(len(p)), np.zeros(len(n))]
    return [
        LayerScore(layer, float(roc_auc_score(labels, np.r_[p[:, j].numpy(), n[:, j].numpy()])), float(cohens_d[j]))
        for j, layer in enumerate(layers)
    ]


def measure_effects(
    backbone: Backbone,
    vector: PersonaVector,
    judges: Judges,
    questions: Sequence[str],
    layers: Sequence[int],
    coef: float,
    settings: GenerationSettings = GenerationSettings(),
    positions: str = "all",
) -> dict[int, tuple[float, float]]:
    """(trait(coef) - trait(0), coherence(coef)) per layer, all layers in one batched generation.

    Rows are [unsteered questions] + [questions for layer l] for each l; each
    layer's term has `coef` on its own rows and 0 elsewhere.
    """
    n = len(questions)
    prompts = [chat_prompt(q) for q in questions] * (len(layers) + 1)
    terms = []
    for j, layer in enumerate(layers):
        coefs = [0.0] * len(prompts)
        coefs[(j + 1) * n : (j + 2) * n] = [coef] * n
        terms.append(SteeringTerm(vector, layer, coefs, positions=positions))  # type: ignore[arg-type]
    seeds = [record_seed(settings.seed, "probe", f"q{i % n}") for i in range(len(prompts))]  # the same dice for every layer
    with progress_bar("measuring the effect per layer", len(prompts)) as advance:
        answers = generate(
            backbone, prompts, steering=terms, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
            seeds=seeds, batch_size=settings.batch_size, on_batch=advance,
        )
    qs = list(questions) * (len(layers) + 1)
    trait = np.array([np.nan if s is None else s for s in judges.trait.score(qs, answers)], dtype=float)
    coherence = np.array([np.nan if s is None else s for s in judges.coherence.score(qs, answers)], dtype=float)
    base = np.nanmean(trait[:n])
    return {
        layer: (float(np.nanmean(trait[(j + 1) * n : (j + 2) * n]) - base), float(np.nanmean(coherence[(j + 1) * n : (j + 2) * n])))
        for j, layer in enumerate(layers)
    }


def choose_layer(rows: Sequence[LayerScore], min_coherence: float = MIN_COHERENCE) -> tuple[int, str]:
    """The layer with the largest measured effect among coherent ones (else the largest effect)."""
    measured = [r for r in rows if r.effect is not None]
    if not measured:
        best = max(rows, key=lambda r: r.cohens_d)
        return best.layer, f"no measured effect; largest Cohen's d ({best.cohens_d:.2f})"
    coherent = [r for r in measured if (r.coherence or 0.0) >= min_coherence]
    pool = coherent or measured
    best = max(pool, key=lambda r: r.effect or 0.0)
    note = f"coherence {best.coherence:.0f} >= {min_coherence:.0f}" if coherent else f"no layer kept coherence >= {min_coherence:.0f}"
    return best.layer, f"largest measured trait effect (+{best.effect:.1f} at the probe coefficient), {note}"


def default_candidates(n_layers: int, count: int = 8) -> list[int]:
    """Evenly spaced layers from 1/6 to 5/6 of the depth (the ends rarely steer well)."""
    low, high = max(1, round(n_layers / 6)), max(1, round(5 * n_layers / 6))
    return sorted({int(round(x)) for x in np.linspace(low, high, min(count, high - low + 1))})


def select_layer(
    backbone: Backbone,
    vector: PersonaVector,
    pos: torch.Tensor,
    neg: torch.Tensor,
    judges: Judges,
    questions: Sequence[str],
    *,
    candidates: Sequence[int] | None = None,
    coef: float = PROBE_COEF,
    settings: GenerationSettings = GenerationSettings(),
    positions: str = "all",
    probe: str = "",
) -> LayerSelection:
    """Score every layer's separation, measure the effect at the candidates on `questions` (described by `probe`), choose one."""
    candidates = list(candidates or default_candidates(backbone.n_layers))
    rows = separation_scores(pos, neg, vector, range(1, backbone.n_layers + 1))
    effects = measure_effects(backbone, vector, judges, questions, candidates, coef, settings, positions)
    for row in rows:
        if row.layer in effects:
            row.effect, row.coherence = effects[row.layer]
    chosen, reason = choose_layer(rows)
    return LayerSelection(rows, chosen, reason, probe)
