"""From a trait to a PersonaVector: contrastive answers, activations, a direction per layer.

Answers are generated under each positive and negative instruction for every
extraction question (or taken as given for a ContrastiveTexts trait), then the
activations of all layers over prompt + answer come from one forward pass per
batch and an aggregator turns the pairs into directions. The projections of
every answer on every layer's direction and the mean hidden-state norm per
layer are kept in the vector's metadata (layer choice, reports and parameter
modulation read them instead of capturing again), and a verdict
on whether the model expresses the trait at all goes beside them
(expressibility.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import activations
from ._io import write_text_atomic
from .aggregators import METHODS, separation
from .capture import GenerationCapture, capture_for
from .errors import TraitError
from .expressibility import Expressibility, from_embedding_judge, from_scores
from .generation import chat_prompt, format_prompts, generate
from .judges.base import Judges
from .models import Backbone
from .monitor import projections, stored_projections
from .progress import progress_bar
from .traits import AnyTrait, ContrastiveTexts, Trait, TraitSketch
from .vectors import PersonaVector


@dataclass(frozen=True)
class ContrastivePair:
    """One question answered under a positive and a negative instruction."""

    pair: int
    question: str
    pos_prompt: str
    pos_answer: str
    neg_prompt: str
    neg_answer: str


@dataclass(frozen=True)
class ExtractionSettings:
    """How answers are generated and reduced. Defaults fit a CPU and a 135M model."""

    method: str = "mean_diff"
    positions: str = "response_avg"
    max_new_tokens: int = 48
    samples_per_question: int = 1
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 128
    n_questions: int | None = None


def pair_prompts(
    backbone: Backbone, trait: Trait | TraitSketch, settings: ExtractionSettings = ExtractionSettings()
) -> tuple[list[tuple[int, str]], list[str], list[str]]:
    """(instruction index, question) of every pair to answer, with its formatted positive and negative prompts."""
    questions = trait.questions[: settings.n_questions]
    keys = [(i, q) for i in range(len(trait.instructions)) for q in questions for _ in range(settings.samples_per_question)]
    pos_prompts = format_prompts(backbone, [chat_prompt(q, trait.instructions[i].pos) for i, q in keys])
    neg_prompts = format_prompts(backbone, [chat_prompt(q, trait.instructions[i].neg) for i, q in keys])
    return keys, pos_prompts, neg_prompts


def pairs_from_answers(keys: list[tuple[int, str]], pos_prompts: list[str], neg_prompts: list[str], answers: list[str]) -> list[ContrastivePair]:
    """Pairs from `pair_prompts` and the answers to its positive prompts then its negative prompts."""
    half = len(keys)
    return [ContrastivePair(i, q, pos_prompts[k], answers[k], neg_prompts[k], answers[half + k]) for k, (i, q) in enumerate(keys)]


def generate_pairs(
    backbone: Backbone, trait: AnyTrait, settings: ExtractionSettings = ExtractionSettings(), capture: GenerationCapture | None = None
) -> list[ContrastivePair]:
    """Contrastive answers for every (instruction pair, question, sample); a `capture` keeps the hidden states of all
    positive answers, then all negative ones (`captured_pairs` splits them)."""
    if isinstance(trait, ContrastiveTexts):
        return [ContrastivePair(i, "", "", p, "", n) for i, (p, n) in enumerate(zip(trait.positive_texts, trait.negative_texts))]
    keys, pos_prompts, neg_prompts = pair_prompts(backbone, trait, settings)
    with progress_bar(f"generating {trait.name} answers", 2 * len(keys)) as advance:
        answers = generate(
            backbone,
            pos_prompts + neg_prompts,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            batch_size=settings.batch_size,
            on_batch=advance,
            capture=capture,
        )
    return pairs_from_answers(keys, pos_prompts, neg_prompts, answers)


PairActivations = tuple[torch.Tensor, torch.Tensor]  # positive and negative side, [n_pairs, layers+1, hidden] each


def generated_pairs(backbone: Backbone, trait: AnyTrait, settings: ExtractionSettings) -> tuple[list[ContrastivePair], PairActivations | None]:
    """The pairs and, where generation can capture them (`capture.capture_for`), their activations from the same pass."""
    capture = None if isinstance(trait, ContrastiveTexts) else capture_for(backbone, settings.positions)
    pairs = generate_pairs(backbone, trait, settings, capture)
    if capture is None:
        return pairs, None
    acts = capture.result()
    return pairs, (acts[: len(pairs)], acts[len(pairs) :])


def _rows_of(subset: Sequence[ContrastivePair], pairs: Sequence[ContrastivePair], acts: PairActivations | None) -> PairActivations | None:
    """The activations of `subset` (pairs taken from `pairs`, the same objects) out of those of `pairs`."""
    if acts is None:
        return None
    index = {id(p): k for k, p in enumerate(pairs)}
    rows = torch.tensor([index[id(p)] for p in subset], dtype=torch.long)
    return acts[0][rows], acts[1][rows]


def question_groups(pairs: Sequence[ContrastivePair]) -> list[Hashable]:
    """The question each pair answers, as the unit of every interval (a given text pair is its own unit)."""
    return [p.question or f"text {k}" for k, p in enumerate(pairs)]


def usable_pairs(pairs: list[ContrastivePair], positions: str) -> list[ContrastivePair]:
    """Pairs whose answers can be averaged (both non-empty) when positions average the response."""
    if positions != "response_avg":
        return pairs
    return [p for p in pairs if p.pos_answer.strip() and p.neg_answer.strip()]


def pair_activations(
    backbone: Backbone, pairs: list[ContrastivePair], *, positions: str = "response_avg", batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced activations of the positive and the negative side: two [n_pairs, layers+1, hidden]."""
    prompts = [p.pos_prompt for p in pairs] + [p.neg_prompt for p in pairs]
    responses = [p.pos_answer for p in pairs] + [p.neg_answer for p in pairs]
    with progress_bar("capturing activations", len(prompts)) as advance:
        acts = activations.collect(
            backbone,
            prompts,
            responses,
            positions=activations.checked_positions(positions),
            batch_size=batch_size,
            on_batch=advance,
        )
    return acts[: len(pairs)], acts[len(pairs) :]


def vector_from_pairs(
    backbone: Backbone,
    pairs: list[ContrastivePair],
    *,
    trait: str,
    method: str = "mean_diff",
    positions: str = "response_avg",
    batch_size: int = 64,
    captured: PairActivations | None = None,
) -> PersonaVector:
    """Directions per layer from the pairs' activations: `captured` when generation kept them (aligned with
    `pairs`), else one forward pass per batch over prompt + answer."""
    if method not in METHODS:
        raise TraitError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    if not pairs:
        raise TraitError(f"no contrastive pairs for trait '{trait}': nothing to extract from")
    usable = usable_pairs(pairs, positions)
    if not usable:
        raise TraitError(f"every answer for trait '{trait}' is empty: raise --max-new-tokens or check the model")
    pos, neg = _rows_of(usable, pairs, captured) or pair_activations(backbone, usable, positions=positions, batch_size=batch_size)
    return vector_from_activations(backbone, pos, neg, trait=trait, method=method, positions=positions)


def vector_from_activations(
    backbone: Backbone, pos: torch.Tensor, neg: torch.Tensor, *, trait: str, method: str = "mean_diff", positions: str = "response_avg"
) -> PersonaVector:
    """Directions per layer from reduced activations of the positive and negative sides ([pairs, layers+1, hidden] each),
    with the projections and norms that later runs read (meter scale, coefficient advice)."""
    directions = METHODS[method](pos, neg)
    vector = PersonaVector(
        directions,
        trait=trait,
        model=backbone.name,
        method=method,
        positions=positions,
        n_samples=len(pos),
        separation=separation(pos, neg, directions).tolist(),
    )
    layers = list(range(1, backbone.n_layers + 1))
    vector.extra["hidden_norms"] = mean_hidden_norms(pos, neg)
    vector.extra["projections"] = {
        "layers": layers,
        "pos": projections(pos, vector, layers).round(decimals=4).tolist(),
        "neg": projections(neg, vector, layers).round(decimals=4).tolist(),
    }
    return vector


def mean_hidden_norms(pos: torch.Tensor, neg: torch.Tensor) -> list[float]:
    """Mean ||h_l|| per layer over the reduced activations of both sides (what parameter modulation scales by)."""
    return [round(float(x), 4) for x in torch.cat([pos, neg]).norm(dim=-1).mean(0)]


MIN_JUDGED_PAIRS = 4  # the offline judge needs 4 answers a side


def best_projection_separation(vector: PersonaVector) -> tuple[float, int] | None:
    """(AUROC, layer) of the layer whose projections best separate positive from negative answers."""
    from .layer_selection import separation_scores  # noqa: PLC0415

    stored = stored_projections(vector)
    if stored is None:
        return None
    best = max(separation_scores(stored[1], stored[2], stored[0]), key=lambda row: row.auroc)
    return best.auroc, best.layer


def assess_pairs(
    trait: str,
    pairs: list[ContrastivePair],
    vector: PersonaVector | None = None,
    judges: Judges | None = None,
    scores: PairScores | None = None,
) -> Expressibility | None:
    """Whether the answers differ in the trait: the judges' scores when given, else the offline judge fitted out of
    fold (None when there are too few answers to fit it: fewer than MIN_JUDGED_PAIRS)."""
    projection = best_projection_separation(vector) if vector is not None else None
    if judges is not None:
        scores = scores or score_pairs(pairs, judges)
        return from_scores(trait, judges.trait.name, scores.pos, scores.neg, sum(scores.passing), projection, groups=question_groups(pairs))
    from .judges.embedding import EmbeddingJudge  # noqa: PLC0415

    usable = usable_pairs(pairs, "response_avg")
    if len(usable) < MIN_JUDGED_PAIRS:
        return None
    judge = EmbeddingJudge.fit([p.pos_answer for p in usable], [p.neg_answer for p in usable], trait=trait, groups=question_groups(usable))
    return from_embedding_judge(trait, judge, len(usable), projection)


def extract(
    backbone: Backbone,
    trait: AnyTrait,
    settings: ExtractionSettings = ExtractionSettings(),
    judges: Judges | None = None,
) -> tuple[PersonaVector, list[ContrastivePair]]:
    """Generate contrastive answers for `trait`, compute its persona vector and say whether the model expresses it.

    With `judges`, only the pairs that pass `filter_pairs` make the vector; the
    per-instruction counts go into the vector's metadata. The expressibility
    verdict (`vector.extra["expressibility"]`) rests on those judges' scores, or
    on the offline judge without them. Returns all pairs.
    """
    torch.manual_seed(settings.seed)
    pairs, captured = generated_pairs(backbone, trait, settings)
    used, scores = pairs, None
    if judges is not None:
        used, report, scores = filter_pairs(pairs, judges)
    vector = vector_from_pairs(
        backbone,
        used,
        trait=trait.name,
        method=settings.method,
        positions=settings.positions,
        batch_size=settings.batch_size,
        captured=_rows_of(used, pairs, captured),
    )
    vector.extra["settings"] = asdict(settings)
    if judges is not None:
        vector.extra["filter"] = {"judge": judges.trait.name, "kept": report.describe()}
    verdict = assess_pairs(trait.name, pairs, vector, judges, scores)
    if verdict is not None:
        vector.extra["expressibility"] = verdict.to_dict()
    return vector, pairs


def check(
    backbone: Backbone, trait: AnyTrait, settings: ExtractionSettings = ExtractionSettings(), judges: Judges | None = None
) -> tuple[Expressibility, PersonaVector, list[ContrastivePair]]:
    """The expressibility verdict (`extract --check`): answers, one activation pass, the judge; nothing filtered or saved.
    Also returns the unfiltered vector and the pairs."""
    torch.manual_seed(settings.seed)
    pairs, captured = generated_pairs(backbone, trait, settings)
    usable = usable_pairs(pairs, settings.positions)
    if not usable:
        raise TraitError(f"every answer for trait '{trait.name}' is empty: raise --max-new-tokens or check the model")
    vector = vector_from_pairs(
        backbone, pairs, trait=trait.name, method=settings.method, positions=settings.positions, batch_size=settings.batch_size, captured=captured
    )
    verdict = assess_pairs(trait.name, pairs, vector, judges)
    if verdict is None:
        raise TraitError(f"only {len(usable)} usable answer pairs for '{trait.name}': the check needs {MIN_JUDGED_PAIRS}; use more questions")
    return verdict, vector, pairs


def expressibility_of(vector: PersonaVector) -> Expressibility | None:
    """The verdict stored at extraction, if the vector has one."""
    data = vector.extra.get("expressibility")
    return Expressibility.from_dict(data) if data else None


TRAIT_THRESHOLD = 50.0
COHERENCE_THRESHOLD = 50.0


@dataclass(frozen=True)
class FilterReport:
    """How many pairs each instruction pair kept, out of how many."""

    kept: dict[int, int]
    total: dict[int, int]

    def describe(self) -> str:
        return ", ".join(f"instruction {i}: {self.kept.get(i, 0)}/{n}" for i, n in sorted(self.total.items()))


@dataclass(frozen=True)
class PairScores:
    """A judge's trait scores of the positive and negative answers, and which pairs pass Chen et al.'s filter."""

    pos: list[float | None]
    neg: list[float | None]
    passing: list[bool]


def score_pairs(pairs: list[ContrastivePair], judges: Judges) -> PairScores:
    """Judge both answers of every pair; a pair passes when the positive answer shows the trait (>= 50),
    the negative does not (< 50) and both are coherent (>= 50)."""
    questions = [p.question for p in pairs] * 2
    answers = [p.pos_answer for p in pairs] + [p.neg_answer for p in pairs]
    trait = judges.trait.score(questions, answers)
    coherence = judges.coherence.score(questions, answers)
    n = len(pairs)
    passing = []
    for k in range(n):
        pos_t, neg_t, pos_c, neg_c = trait[k], trait[n + k], coherence[k], coherence[n + k]
        passing.append(
            pos_t is not None
            and neg_t is not None
            and pos_c is not None
            and neg_c is not None
            and pos_t >= TRAIT_THRESHOLD
            and neg_t < TRAIT_THRESHOLD
            and min(pos_c, neg_c) >= COHERENCE_THRESHOLD
        )
    return PairScores(trait[:n], trait[n:], passing)


def filter_pairs(pairs: list[ContrastivePair], judges: Judges) -> tuple[list[ContrastivePair], FilterReport, PairScores]:
    """The pairs that pass the judge filter (`score_pairs`), as Chen et al. filter before computing the vector."""
    scores = score_pairs(pairs, judges)
    kept = [pair for pair, ok in zip(pairs, scores.passing) if ok]
    report = FilterReport(dict(Counter(p.pair for p in kept)), dict(Counter(p.pair for p in pairs)))
    if not kept:
        raise TraitError(
            f"no pair passed the judge filter ({report.describe()}): the instructions may not elicit the trait "
            "on this model; check it with `personactl extract --check`, or write stronger instructions"
        )
    return kept, report, scores


def save_pairs(pairs: Iterable[ContrastivePair], path: str | Path) -> Path:
    """Write the contrastive answers as JSONL (atomically)."""
    return write_text_atomic(path, "".join(json.dumps(asdict(p)) + "\n" for p in pairs))


def load_pairs(path: str | Path) -> list[ContrastivePair]:
    """Read contrastive answers written by save_pairs."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ContrastivePair(**json.loads(line)) for line in lines if line.strip()]
