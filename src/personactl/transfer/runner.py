"""One transfer experiment end to end: vectors on both models, paired activations, the ridge map,
every method's vector steering the target, judged, with diagnostics A/B/C and a report.

Every expensive step leaves a file in the output folder (vectors, pairs, map,
answers) and a rerun with the same config picks them up, so a killed run
goes on where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .._io import write_text_atomic
from ..errors import TransferError
from ..extraction import ExtractionSettings, extract, load_pairs, question_groups, save_pairs
from ..judges.factory import make_judges
from ..models import Backbone, load_model
from ..traits import AnyTrait, Trait
from ..vectors import PersonaVector, load_vector
from . import baselines
from .config import TransferConfig
from .diagnostics import hypothesis_a, hypothesis_b, hypothesis_c, success_criteria, write_hypothesis
from .evaluation import Cell, generate_cells, score_cells
from .mapping import fit_map, method_vectors
from .pairs import builtin_texts, layer_pair, read_texts
from .report import write_report
from .result import TransferResult

NULL_ROTATIONS = 1000


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def claim_output(config: TransferConfig, out: Path) -> None:
    """Write config.json, or refuse a folder holding a run with another config."""
    path = out / "config.json"
    wanted = config.model_dump(mode="json")
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            diff = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise TransferError(f"{out} holds a transfer run with another config ({', '.join(diff)} differ): use another output_dir or delete it")
        return
    write_text_atomic(path, json.dumps(wanted, indent=2))


def config_layers(config: TransferConfig, source: Backbone, target: Backbone) -> tuple[int, int]:
    """(source layer, target layer) from layer_map, else layer_idx, else the default depth (see `layer_pair`)."""
    ((s, t),) = config.layer_map.items() if config.layer_map else [(config.layer_idx, None)]
    return layer_pair(source, target, s, t, config.layer_correspondence)


def persona_vector(backbone: Backbone, trait: AnyTrait, config: TransferConfig, folder: Path) -> tuple[PersonaVector, list]:
    """The trait's vector on `backbone`, extracted once and cached with its pairs."""
    path = folder / f"{_slug(backbone.name)}_{trait.name}.safetensors"
    pairs_path = path.with_suffix(".pairs.jsonl")
    if path.is_file() and pairs_path.is_file():
        return load_vector(path), load_pairs(pairs_path)
    vector, pairs = extract(backbone, trait, ExtractionSettings(n_questions=config.extraction_questions, seed=config.seed))
    save_pairs(pairs, pairs_path)
    vector.save(path)
    return vector, pairs


def _test_prompts(config: TransferConfig, trait: AnyTrait) -> list[str]:
    if config.test_prompts:
        return config.test_prompts[: config.n_test_prompts]
    if isinstance(trait, Trait):
        return trait.eval_questions[: config.n_test_prompts]
    raise TransferError(f"persona '{trait.name}' is given as texts and has no questions of its own: set test_prompts in the config")


def plan_cells(config: TransferConfig, vectors: dict[str, torch.Tensor], target_vector: PersonaVector, t_layer: int, n_layers: int) -> list[Cell]:
    """Main grid (every method x alpha, and unsteered); A: the ridge direction and the oracle at the same multiples of
    the oracle norm (the oracle's main-grid alphas are not repeated); B: Procrustes and random at the oracle norm x alpha;
    C: a scan of target layers."""
    oracle_norm = float(vectors["oracle"].norm())
    unit = {m: v / v.norm().clamp_min(1e-12) for m, v in vectors.items()}
    cells = [Cell("unsteered", t_layer, 0.0)]
    cells += [Cell(m, t_layer, a, v) for m, v in vectors.items() for a in config.alpha_values]
    scales = sorted({*config.magnitude_scales, *config.alpha_values})
    cells += [Cell("ridge@oracle_norm", t_layer, s, unit["ridge"] * oracle_norm, "A") for s in scales]
    cells += [Cell("oracle", t_layer, s, vectors["oracle"], "A") for s in scales if s not in config.alpha_values]
    cells += [Cell(f"{m}@oracle_norm", t_layer, a, unit[m] * oracle_norm, "B") for m in ("procrustes", "random") for a in config.alpha_values]
    scan = sorted({*np.linspace(1, n_layers - 1, config.layer_scan).round().astype(int).tolist(), t_layer})
    alpha = sorted(config.alpha_values)[len(config.alpha_values) // 2]
    for layer in scan:
        norm = float(target_vector.directions[layer].norm())
        cells += [
            Cell("ridge@oracle_norm", layer, alpha, unit["ridge"] * norm, "C"),
            Cell("oracle", layer, alpha, target_vector.directions[layer].float(), "C"),
        ]
    return cells


def _answers(target: Backbone, prompts: list[str], cells: list[Cell], config: TransferConfig, path: Path) -> dict[str, list[str]]:
    """Answers per cell; cells already in `path` (JSONL) are not generated again."""
    done: dict[str, list[str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that cell is generated again
            done[record["cell"]] = record["answers"]
    todo = [c for c in cells if c.key not in done]
    if todo:
        fresh = generate_cells(target, prompts, todo, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, seed=config.seed)
        with path.open("a", encoding="utf-8") as f:
            for key, answers in fresh.items():
                f.write(json.dumps({"cell": key, "answers": answers}) + "\n")
        done.update(fresh)
    return done


def run_transfer(config: TransferConfig, *, source: Backbone | None = None, target: Backbone | None = None) -> list[TransferResult]:
    """Run the experiment for every persona in the config; returns one result per persona."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    claim_output(config, out)
    traits = config.traits()
    for trait in traits:
        _test_prompts(config, trait)  # fail before any model runs
    source = source or load_model(config.source_model)
    target = target or load_model(config.target_model)
    s_layer, t_layer = config_layers(config, source, target)
    texts = read_texts(config.texts) if config.texts else builtin_texts()
    tmap, pairs = fit_map(
        source,
        target,
        s_layer,
        t_layer,
        texts,
        out,
        lambdas=config.lambda_values,
        n_pairs=config.n_training_samples,
        reduction=config.reduction,
        seed=config.seed,
        batch_size=config.batch_size,
    )
    results = []
    for trait in traits:
        source_vector, _ = persona_vector(source, trait, config, out / "vectors")
        target_vector, target_pairs = persona_vector(target, trait, config, out / "vectors")
        vectors = method_vectors(source_vector.directions[s_layer], tmap, config.seed, oracle=target_vector.directions[t_layer])
        cells = plan_cells(config, vectors, target_vector, t_layer, target.n_layers)
        prompts = _test_prompts(config, trait)
        answers = _answers(target, prompts, cells, config, out / f"answers_{trait.name}.jsonl")
        judges = make_judges(
            config.judge_spec, trait, [p.pos_answer for p in target_pairs], [p.neg_answer for p in target_pairs], question_groups(target_pairs)
        )
        rows = score_cells(judges, prompts, cells, answers)
        norms = {m: float(v.norm()) for m, v in vectors.items()}
        cosines = {m: float(torch.nn.functional.cosine_similarity(v, vectors["oracle"], dim=0)) for m, v in vectors.items()}
        null = baselines.random_cosine_null(vectors["oracle"].double(), NULL_ROTATIONS, config.seed)
        hypotheses = {"a": hypothesis_a(rows, norms), "b": hypothesis_b(rows, cosines, np.asarray(null)), "c": hypothesis_c(rows, t_layer)}
        result = TransferResult(trait.name, s_layer, t_layer, rows, hypotheses, success_criteria(rows))
        for letter, payload in hypotheses.items():
            result.files[f"hypothesis_{letter}"] = str(write_hypothesis(out, letter, source.name, target.name, trait.name, payload))
        result.files["results"] = str(write_text_atomic(out / f"results_{trait.name}.json", json.dumps(rows, indent=2)))
        result.files["report"] = str(write_report(out, config, result, tmap.ridge, len(pairs)))
        results.append(result)
    return results
