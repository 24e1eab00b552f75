"""One evaluation run end to end: vector, judges, layer choice, sweep, report.

Every step leaves its product in the run folder (`vector.safetensors`,
`vector.pairs.jsonl`, `judge.json`, `layers.json`, `projections.json`,
`results.jsonl`, `summary.csv`, `report.html`), and a re-run reuses what is
there, so a killed run resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._io import write_text_atomic
from .backends import backend_methods
from .evaluate import GroupRunner, SweepConfig, SweepError, claim_run_dir, run_sweep, summarize
from .expressibility import Expressibility, from_embedding_judge
from .extraction import (
    ContrastivePair,
    ExtractionSettings,
    assess_pairs,
    best_projection_separation,
    expressibility_of,
    extract,
    load_pairs,
    pair_activations,
    question_groups,
    save_pairs,
    stored_projections,
    usable_pairs,
)
from .judges.base import Judges
from .judges.embedding import EmbeddingJudge
from .judges.factory import make_judges
from .layer_selection import LayerSelection, LayerSpec, blend_size, check_blend_size, layer_weights, probe_questions, select_layer
from .methods import MethodContext, make_method
from .models import Backbone, load_model
from .monitor import projections
from .progress import note
from .traits import Trait, load_trait
from .vectors import PersonaVector, load_vector
from .verdicts import Verdict, sweep_verdicts

RunnerFactory = Callable[[MethodContext, list[str], list[str], int], GroupRunner]  # (context, methods, questions, seed)


@dataclass
class RunResult:
    """What a run produced and where."""

    run_dir: Path
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    layers: list[LayerSpec]  # ints, and "auto:K" labels of blends (weights in selection.blends)
    selection: LayerSelection | None
    report: Path | None
    prepared: Prepared
    verdicts: list[Verdict]


def update_info(run_dir: Path, **sections: Any) -> None:
    """Merge sections into config.json (next to the sweep's own config)."""
    path = run_dir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update(sections)
    write_text_atomic(path, json.dumps(data, indent=2))


def _vector_and_pairs(config: SweepConfig, backbone: Backbone, trait: Trait, run_dir: Path) -> tuple[PersonaVector, list[ContrastivePair]]:
    """The given vector (with its pairs file if any), the run's cached one, or a fresh extraction."""
    if config.vector:
        vector = load_vector(config.vector, backbone=backbone)
        pairs_file = Path(config.vector).with_suffix(".pairs.jsonl")
        return vector, load_pairs(pairs_file) if pairs_file.exists() else []
    cached = run_dir / "vector.safetensors"
    pairs_file = cached.with_suffix(".pairs.jsonl")  # the same naming as `personactl extract`
    if cached.exists() and pairs_file.exists():
        return load_vector(cached, backbone=backbone), load_pairs(pairs_file)
    vector, pairs = extract(backbone, trait, ExtractionSettings(seed=config.seed, n_questions=config.extraction_questions))
    save_pairs(pairs, pairs_file)
    vector.save(cached)
    return vector, pairs


def _judges(config: SweepConfig, trait: Trait, pairs: list[ContrastivePair], run_dir: Path, relevance: bool) -> Judges:
    if config.judge == "embed" and not pairs:
        raise SweepError("the embed judge is fitted on the extraction answers: give a vector with its .pairs.jsonl beside it, or no --vector")
    questions = [*trait.questions, *trait.eval_questions] if relevance else None
    judges = make_judges(config.judge, trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs], question_groups(pairs), questions)
    info: dict[str, Any] = {"spec": config.judge, "trait_judge": judges.trait.name, "coherence_judge": judges.coherence.name}
    if judges.relevance is not None:
        info["relevance_judge"] = judges.relevance.name
    if isinstance(judges.trait, EmbeddingJudge):  # the one judge fitted here (on the extraction answers)
        info["heldout_accuracy"] = judges.trait.heldout_accuracy
        judges.trait.save(run_dir / "judge.json")
    update_info(run_dir, judge=info)
    return judges


def _layers(
    config: SweepConfig,
    backbone: Backbone,
    vector: PersonaVector,
    pairs: list[ContrastivePair],
    judges: Judges,
    trait: Trait,
    run_dir: Path,
) -> tuple[list[LayerSpec], LayerSelection | None]:
    """Explicit layers, 'auto' (the best measured layer) and 'auto:K' (a blend, weights from layer_weights), as configured.

    The measurement is cached in layers.json (with the blends' weights, for the report); 'auto' resolves to
    the chosen layer's index, a blend keeps its label as its layer.
    """
    specs: list[LayerSpec] = [config.layers] if isinstance(config.layers, str) else list(config.layers)
    if all(isinstance(spec, int) for spec in specs):
        return specs, None
    check_layer_specs(config, backbone)
    selection = _selection(config, backbone, vector, pairs, judges, trait, run_dir)
    resolved: list[LayerSpec] = []
    for spec in specs:
        k = blend_size(spec)
        if k is not None:
            selection.blends[str(spec)] = layer_weights(selection.rows, k, backbone.n_layers)
        item = selection.chosen if spec == "auto" else spec
        if item not in resolved:
            resolved.append(item)
    if selection.blends:
        selection.save(run_dir / "layers.json")
        update_info(run_dir, layer_blends={spec: b.describe() for spec, b in selection.blends.items()})
    return resolved, selection


def _selection(
    config: SweepConfig,
    backbone: Backbone,
    vector: PersonaVector,
    pairs: list[ContrastivePair],
    judges: Judges,
    trait: Trait,
    run_dir: Path,
) -> LayerSelection:
    """The per-layer measurement (cached in layers.json), plus projections.json for the report."""
    saved = run_dir / "layers.json"
    if saved.exists():
        return LayerSelection.load(saved)
    _, pos, neg = _answer_projections(backbone, vector, pairs)
    questions, probe = probe_questions(trait.questions, config.extraction_questions if not config.vector else None)
    selection = select_layer(backbone, vector, pos, neg, judges, questions, settings=config.generation(), positions=config.positions, probe=probe)
    selection.save(saved)
    chosen = selection.chosen
    write_text_atomic(
        run_dir / "projections.json",
        json.dumps({"layer": chosen, "pos": pos[:, chosen - 1].tolist(), "neg": neg[:, chosen - 1].tolist()}),
    )
    update_info(run_dir, layer_selection={"chosen": chosen, "reason": selection.reason, "probe": selection.probe})
    return selection


def _answer_projections(backbone: Backbone, vector: PersonaVector, pairs: list[ContrastivePair]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Projections of the extraction answers on layers 1..n: kept in the vector since extraction, else captured now."""
    stored = stored_projections(vector)
    if stored is not None:
        return stored
    pairs = usable_pairs(pairs, vector.positions)
    if not pairs:
        raise SweepError("--layers auto needs the extraction answers: give a vector with its .pairs.jsonl, or name the layers")
    pos, neg = pair_activations(backbone, pairs, positions=vector.positions if vector.positions != "unknown" else "response_avg")
    layers = list(range(1, backbone.n_layers + 1))
    return layers, projections(pos, vector, layers), projections(neg, vector, layers)


@dataclass
class Prepared:
    """A run folder with its model, trait, vector, extraction answers and judges ready."""

    config: SweepConfig
    run_dir: Path
    backbone: Backbone
    trait: Trait
    vector: PersonaVector
    pairs: list[ContrastivePair]
    judges: Judges
    expressibility: Expressibility | None


def prepare(config: SweepConfig, out_dir: str | Path = "runs", backbone: Backbone | None = None, relevance: bool = False) -> Prepared:
    """Claim `out_dir/<name>/` and get (or reuse) the vector, its answers and the judges (with `relevance`, a judge of
    relevance to the question too, over the trait's questions)."""
    run_dir = Path(out_dir) / config.name
    trait = load_trait(config.trait)
    if not isinstance(trait, Trait):
        raise SweepError(f"trait '{trait.name}' has no evaluation questions: sweeps need a full trait file")
    backbone = backbone or load_model(config.model)
    check_layer_specs(config, backbone)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim_run_dir(config, run_dir)
    vector, pairs = _vector_and_pairs(config, backbone, trait, run_dir)
    update_info(run_dir, vector={"trait": vector.trait, "model": vector.model, "method": vector.method, "fingerprint": vector.fingerprint()})
    judges = _judges(config, trait, pairs, run_dir, relevance)
    return Prepared(config, run_dir, backbone, trait, vector, pairs, judges, _expressibility(trait, vector, pairs, judges, run_dir))


def _expressibility(trait: Trait, vector: PersonaVector, pairs: list[ContrastivePair], judges: Judges, run_dir: Path) -> Expressibility | None:
    """Whether this run's judge tells the model's positive from its negative answers (config.json 'expressibility').

    The offline judge reports what it measured when fitted; an LLM judge scores the extraction answers once.
    Without answers, the verdict stored in the vector at extraction (if any) stands.
    """
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("expressibility")
    if saved:
        verdict: Expressibility | None = Expressibility.from_dict(saved)
    elif not pairs:
        verdict = expressibility_of(vector)
    elif isinstance(judges.trait, EmbeddingJudge):
        verdict = from_embedding_judge(trait.name, judges.trait, len(usable_pairs(pairs, "response_avg")), best_projection_separation(vector))
    else:
        verdict = assess_pairs(trait.name, pairs, vector, judges)
    if verdict is not None:
        if not saved:
            update_info(run_dir, expressibility=verdict.to_dict())
        note(verdict.line())
    return verdict


def check_layer_specs(config: SweepConfig, backbone: Backbone) -> None:
    """Refuse an 'auto:K' with more layers than the model has, before anything is extracted or measured."""
    for spec in [config.layers] if isinstance(config.layers, str) else config.layers:
        k = blend_size(spec)
        if k is not None:
            check_blend_size(k, backbone.n_layers)


def choose_layers(prep: Prepared) -> tuple[list[LayerSpec], LayerSelection | None]:
    """The layers to sweep: as configured, chosen by measured effect (`auto`), or blended (`auto:K`)."""
    return _layers(prep.config, prep.backbone, prep.vector, prep.pairs, prep.judges, prep.trait, prep.run_dir)


def run(
    config: SweepConfig, out_dir: str | Path = "runs", backbone: Backbone | None = None, report: bool = True, runner: RunnerFactory | None = None
) -> RunResult:
    """Run (or resume) the sweep `config` in `out_dir/<name>/` and write its report.

    With a `runner` factory (e.g. `functools.partial(personactl.scaleout.RayRunner, pool)`), the sweep's groups are
    generated where that runner sends them; this process prepares the run, judges and is the only writer of
    results.jsonl, so resuming and the report work the same. Without one, everything runs here."""
    prep = prepare(config, out_dir, backbone)
    layers, selection = choose_layers(prep)
    ctx = MethodContext(
        prep.backbone,
        prep.trait,
        prep.vector,
        config.generation(),
        config.positions,
        {"lora": config.lora or "", "adapter": config.adapter or "", "cap_at": config.cap_at or "", "backend": config.backend, "model": config.model},
        {spec: blend.weights for spec, blend in (selection.blends if selection else {}).items()},
        prep.pairs,
    )
    names = backend_methods(config.methods, config.backend)  # llamacpp: vector -> llamacpp-vector ...
    methods = [make_method(name, ctx) for name in names]
    questions = prep.trait.eval_questions[: config.n_questions]
    remote = runner(ctx, names, questions, config.seed) if runner is not None else None
    records = run_sweep(config, prep.backbone, methods, layers, questions, prep.judges, prep.run_dir, remote)
    report_path = None
    if report:
        from .report import write_report  # noqa: PLC0415

        report_path = write_report(prep.run_dir)
    summary = summarize(records)
    return RunResult(prep.run_dir, records, summary, layers, selection, report_path, prep, run_verdicts(summary, records, prep.expressibility))


def run_verdicts(summary: list[dict[str, Any]], records: list[dict[str, Any]], expressibility: Expressibility | None) -> list[Verdict]:
    """One verdict per method and layer (verdicts.py), told whether the judge could separate the trait at all."""
    return sweep_verdicts(summary, records, None if expressibility is None else expressibility.expressed)
