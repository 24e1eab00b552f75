"""Which layer to steer: separation of projections, and the measured steering effect.

Separation (AUROC and Cohen's d of positive vs negative projections) says
where the trait is readable; the measured effect (judged trait at `coef` minus
at 0, from one short batched sweep over all candidate layers) says where
steering works. `--layer auto` picks the layer with the largest measured effect
among those whose steered answers stay coherent, and records why; `auto:K`
steers the top K such layers at once, the coefficient split across them in
proportion to their measured effects (`layer_weights`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import write_text_atomic
from .errors import PersonactlError
from .generation import chat_prompt, generate, record_seed
from .judges.base import Judges
from .methods import GenerationSettings
from .models import Backbone
from .progress import progress_bar
from .steering import SteeringTerm, StepPositions
from .vectors import PersonaVector, load_vector

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
    blends: dict[str, Any] = field(default_factory=dict)  # "auto:K" -> LayerBlend (as a dict once saved)
    vector: str = ""  # fingerprint of the vector whose effects these are

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LayerSelection:
        """A saved selection (its blends are not read back: `layer_weights` recomputes them from the rows)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls([LayerScore(**r) for r in data["rows"]], data["chosen"], data["reason"], data.get("probe", ""), vector=data.get("vector", ""))


def probe_questions(extraction_questions: Sequence[str], n_used: int | None, count: int = PROBE_QUESTIONS) -> tuple[list[str], str]:
    """Questions to measure the effect per layer on, and a note saying which they are.

    They come from the extraction questions, so the layer is never chosen on the
    held-out questions the sweep then scores (that would bias the chosen layer's
    effect upward). Unused extraction questions are preferred when enough remain.
    """
    questions = list(extraction_questions)
    used = len(questions) if n_used is None else min(n_used, len(questions))
    if len(questions) - used >= count:
        return questions[
            used : used + count
        ], f"measured on extraction questions {used + 1}-{used + count}, not used to extract the vector and never scored by the sweep"
    start = max(0, len(questions) - count)
    return questions[start:], f"measured on extraction questions {start + 1}-{len(questions)}, never scored by the sweep"


def separation_scores(pos: torch.Tensor, neg: torch.Tensor, layers: Sequence[int]) -> list[LayerScore]:
    """AUROC and Cohen's d per layer from the projections [n, len(layers)] of positive and negative answers."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    pooled = ((pos.var(0) + neg.var(0)) / 2).sqrt() if min(len(pos), len(neg)) > 1 else torch.ones(pos.shape[1])
    cohens_d = (pos.mean(0) - neg.mean(0)) / pooled.clamp_min(1e-12)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return [
        LayerScore(layer, float(roc_auc_score(labels, np.r_[pos[:, j].numpy(), neg[:, j].numpy()])), float(cohens_d[j]))
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
    positions: StepPositions = "all",
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
        terms.append(SteeringTerm(vector, layer, coefs, positions=positions))
    seeds = [record_seed(settings.seed, "probe", f"q{i % n}") for i in range(len(prompts))]  # the same dice for every layer
    with progress_bar("measuring the effect per layer", len(prompts)) as advance:
        answers = generate(
            backbone,
            prompts,
            steering=terms,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            seeds=seeds,
            batch_size=settings.batch_size,
            on_batch=advance,
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


class LayerSpecError(PersonactlError):
    """A layer spec such as 'auto:K' that cannot be resolved for this model."""


LayerSpec = int | str  # a layer index, or the label of a blend: "auto:K"
_BLEND = re.compile(r"^auto:(-?\d+)$")


def blend_size(spec: LayerSpec) -> int | None:
    """K of an 'auto:K' spec, None for anything else (an int layer, 'auto')."""
    match = _BLEND.match(spec) if isinstance(spec, str) else None
    return int(match.group(1)) if match else None


def check_blend_size(k: int, n_layers: int) -> int:
    """K itself, or a one-line error when the model has no K layers to blend."""
    if not 1 <= k <= n_layers:
        raise LayerSpecError(f"auto:{k} asks for {k} layers but the model has {n_layers}: use auto:1 to auto:{n_layers}")
    return k


@dataclass
class LayerBlend:
    """Several layers steered at once: coefficient c adds c * weights[l] * v[l] at each layer l."""

    spec: str
    weights: dict[int, float]
    note: str = ""

    def describe(self) -> str:
        text = ", ".join(f"L{layer} {w:.2f}" for layer, w in self.weights.items())
        return f"{self.spec}: {text}" + (f" ({self.note})" if self.note else "")


def layer_weights(rows: Sequence[LayerScore], k: int, n_layers: int | None = None, min_coherence: float = MIN_COHERENCE) -> LayerBlend:
    """The top-`k` layers by measured effect, weighted in proportion to it; the weights sum to 1.

    A layer qualifies when its measured effect is positive and its steered
    answers kept coherence >= `min_coherence` (the rule `auto` uses for one
    layer). Fewer than `k` qualifying: those are used and the note says so; none:
    the blend is the `auto` layer alone (weight 1) and the note says why.

    Normalisation, sum_l w_l = 1: each v[l] is the pos - neg activation gap at
    its own layer, so coefficient c on one layer moves the stream by c gaps, and
    on the blend by c * w_l gaps at each layer: c gaps in total, split by
    effect. The blend at c is thus a weighted average of the single-layer
    interventions at c, and `auto:1` is exactly `auto`. Equal summed L2 norm
    (sum_l w_l |v_l| = |v_best|) was not taken: |v[l]| grows with depth along
    with the residual stream, so the same L2 norm is a much larger push at an
    early layer than at a late one, and the weights would then say less about
    how hard each layer is pushed.
    """
    check_blend_size(k, n_layers if n_layers is not None else max((r.layer for r in rows), default=0))
    spec = f"auto:{k}"
    qualified = [r for r in rows if r.effect is not None and r.effect > 0 and (r.coherence or 0.0) >= min_coherence]
    if not qualified:
        layer, reason = choose_layer(rows, min_coherence)
        return LayerBlend(
            spec, {layer: 1.0}, f"no layer had a positive effect with coherence >= {min_coherence:.0f}: the auto layer alone ({reason})"
        )
    top = sorted(qualified, key=lambda r: -(r.effect or 0.0))[:k]
    total = sum(r.effect or 0.0 for r in top)
    weights = {r.layer: (r.effect or 0.0) / total for r in top}
    note = (
        ""
        if len(top) == k
        else (f"only {len(top)} of the measured layers had a positive effect with coherence >= {min_coherence:.0f}: blending those")
    )
    return LayerBlend(spec, weights, note)


def blend_for_vector(vector_path: str | Path, spec: str, n_layers: int) -> LayerBlend:
    """The blend `spec` ("auto" or "auto:K") from the layers.json beside a vector file (a run folder holds both)."""
    k = 1 if spec == "auto" else blend_size(spec)
    if k is None:
        raise LayerSpecError(f"'{spec}' is not a layer, 'auto' or 'auto:K' (e.g. auto:3)")
    check_blend_size(k, n_layers)
    saved = Path(vector_path).parent / "layers.json"
    if not saved.is_file():
        raise LayerSpecError(
            f"--layer {spec} needs the measured effect per layer, and there is no layers.json beside {vector_path}: "
            "run `personactl layers` first and use the vector.safetensors of its run folder"
        )
    try:
        selection = LayerSelection.load(saved)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayerSpecError(f"cannot read {saved}: {exc}; re-run `personactl layers`") from exc
    if selection.vector and selection.vector != load_vector(vector_path).fingerprint():
        raise LayerSpecError(
            f"{saved} was measured with another vector than {vector_path}: use the vector of that run folder, "
            "or run `personactl layers --vector` on this one"
        )
    return layer_weights(selection.rows, k, n_layers)


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
    positions: StepPositions = "all",
    probe: str = "",
) -> LayerSelection:
    """Score every layer's separation from the answers' projections `pos`, `neg` [n, n_layers] (layers 1..n, as
    `extraction.stored_projections` gives them), measure the effect at the candidates on `questions` (described
    by `probe`), choose one."""
    candidates = list(candidates or default_candidates(backbone.n_layers))
    rows = separation_scores(pos, neg, range(1, backbone.n_layers + 1))
    effects = measure_effects(backbone, vector, judges, questions, candidates, coef, settings, positions)
    for row in rows:
        if row.layer in effects:
            row.effect, row.coherence = effects[row.layer]
    chosen, reason = choose_layer(rows)
    return LayerSelection(rows, chosen, reason, probe, vector=vector.fingerprint())
