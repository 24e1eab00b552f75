"""Cross-model transfer and conditional steering."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..errors import OptionError
from . import _common
from ._common import DeviceMapOpt, DeviceOpt, DtypeOpt, ModelOpt, condition_app, err, out, parse_floats, transfer_app


@condition_app.command("find")
def condition_find(
    positive: Path = typer.Option(..., "--positive", help="prompts the condition should fire on (.txt, one per line)"),
    negative: Path = typer.Option(..., "--negative", help="prompts it should not fire on (.txt, one per line)"),
    model: str = ModelOpt,
    out_path: Path | None = typer.Option(
        None, "--out", "-o", help="condition vector file (.safetensors) [default: vectors/<model>/condition-<positive>.safetensors]"
    ),
    heldout: float = typer.Option(0.3, help="fraction of each file held out to measure accuracy (never used to choose)"),
    seed: int = typer.Option(0, help="seed of the training/held-out split"),
    system: str | None = typer.Option(None, help="system message the prompts will be asked with"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    device_map: str | None = DeviceMapOpt,
) -> None:
    """Find a condition: a direction per layer from two sets of prompts, the threshold that separates them, and
    the layer that does it best (cross-validated on the training prompts; held-out accuracy reported per layer)."""
    from ..conditions import check_request, find_condition, layer_table, read_prompts  # noqa: PLC0415

    pos, neg = read_prompts(positive), read_prompts(negative)
    check_request(pos, neg, heldout)
    if out_path is not None and out_path.suffix != ".safetensors":
        raise OptionError(f"--out {out_path}: a condition vector is saved as .safetensors")
    backbone = _common._load(model, device, dtype, device_map)
    search = find_condition(backbone, pos, neg, heldout=heldout, seed=seed, system=system, name=f"condition-{positive.stem}")
    path = search.vector.save(out_path or Path("vectors") / backbone.name / f"condition-{positive.stem}.safetensors")
    chosen = search.chosen
    if as_json:
        print(
            json.dumps(
                {
                    "layer": chosen.layer,
                    "threshold": chosen.threshold,
                    "comparison": "greater",
                    "heldout_accuracy": chosen.heldout_accuracy,
                    "vector": str(path),
                    "layers": layer_table(search),
                },
                indent=2,
            )
        )
        return
    table = Table("layer", "threshold", "train acc", "cv acc", "held-out acc", "margin (sd)", "")
    for fit in search.layers:
        table.add_row(
            str(fit.layer),
            f"{fit.threshold:+.4g}",
            f"{fit.train_accuracy:.2f}",
            f"{fit.cv_accuracy:.2f}",
            f"{fit.heldout_accuracy:.2f}",
            f"{fit.margin:.2f}",
            "chosen" if fit is chosen else "",
        )
    out.print(table)
    n_pos, n_neg = search.heldout
    out.print(
        f"condition: layer {chosen.layer}, threshold {chosen.threshold:.4g} (greater); held-out accuracy "
        f"{chosen.heldout_accuracy:.2f} on {len(n_pos)} positive and {len(n_neg)} negative prompts"
    )
    out.print(f"condition vector written to {path}")


@transfer_app.command("run")
def transfer_run(config: Path = typer.Option(..., help="experiment JSON (source_model, target_model, layer_idx, persona_datasets, ...)")) -> None:
    """The whole experiment: vectors on both models, paired activations, ridge map, every method and baseline
    steering the target, judged, diagnostics A/B/C and a report per persona. A rerun resumes."""
    from ..transfer import load_config, run_transfer  # noqa: PLC0415

    for result in run_transfer(load_config(config)):
        table = Table("criterion", "measured", "verdict", title=f"{result.trait}: layer {result.source_layer} -> {result.target_layer}")
        for c in result.criteria:
            table.add_row(c["criterion"], c["said"], c["verdict"])
        out.print(table)
        for letter, payload in result.hypotheses.items():
            out.print(f"{letter.upper()}: {payload['conclusion']}")
        for label, path in result.files.items():
            out.print(f"{label}: {path}")


@transfer_app.command("extract")
def transfer_extract(
    trait: str = typer.Option(..., help="built-in trait name or trait file"),
    source: str = typer.Option("smollm2-135m", help="source model"),
    target: str = typer.Option("gemma3-270m", help="target model"),
    layer: int | None = typer.Option(None, help="source layer [default: 5/6 of its depth]"),
    target_layer: int | None = typer.Option(None, help="target layer [default: the same relative depth]"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the map, the pairs and the source vector"),
    n_pairs: int = typer.Option(5000, help="paired activations for the map"),
    lambdas: str = typer.Option("0.01,0.1,1,10", help="ridge penalties tried by leave-one-out"),
    texts: Path | None = typer.Option(None, help="texts for the pairs (.txt lines or .jsonl 'text'); default: the shipped corpus"),
    n_questions: int = typer.Option(12, help="extraction questions for the source vector"),
) -> None:
    """Extract the persona vector on the source model and fit the source -> target map."""
    from ..extraction import ExtractionSettings  # noqa: PLC0415
    from ..extraction import extract as run_extract
    from ..traits import load_trait  # noqa: PLC0415
    from ..transfer import builtin_texts, fit_map, layer_pair, read_texts  # noqa: PLC0415

    loaded_trait = load_trait(trait)
    penalties = parse_floats(lambdas, "--lambdas")
    src, tgt = _common._load(source, None, None, None), _common._load(target, None, None, None)
    s_layer, t_layer = layer_pair(src, tgt, layer, target_layer)
    tmap, pairs = fit_map(src, tgt, s_layer, t_layer, read_texts(texts) if texts else builtin_texts(), out_dir, lambdas=penalties, n_pairs=n_pairs)
    vector, _ = run_extract(src, loaded_trait, ExtractionSettings(n_questions=n_questions))
    vector.save(out_dir / "source_vector.safetensors")
    out.print(f"{len(pairs)} pairs, layer {s_layer} -> {t_layer}, lambda {tmap.ridge.lam:g}")
    for lam, scores in tmap.ridge.scores.items():
        out.print(f"  lambda {lam:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    if tmap.info["lambda_note"]:
        err.print(f"note: {tmap.info['lambda_note']}")
    out.print(f"map and source vector written to {out_dir}")


@transfer_app.command("apply")
def transfer_apply(
    map_dir: Path = typer.Option(..., "--map", help="folder written by `transfer extract`"),
    vector: Path = typer.Option(..., help="the source model's persona vector"),
    baseline: str = typer.Option("ridge", help="ridge, or a baseline: procrustes, pad, interpolate, random"),
    out_path: Path = typer.Option(..., "--out", help="vector file for the target model"),
    seed: int = typer.Option(0, help="seed of the random orthogonal baseline"),
) -> None:
    """Carry a source persona vector to the target model (a target vector, non-zero at the mapped layer)."""
    from ..transfer import TransferMap, map_vector  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    tmap = TransferMap.load(map_dir)
    mapped = map_vector(load_vector(vector), tmap, baseline, seed)
    mapped.save(out_path)
    out.print(
        f"{baseline} vector for {tmap.info['target_model']} (layer {tmap.info['target_layer']}, "
        f"norm {mapped.norms[tmap.info['target_layer']]:.3g}) written to {out_path}"
    )


@transfer_app.command("evaluate")
def transfer_evaluate(
    vector: Path = typer.Option(..., help="a target-model vector (from `transfer apply`, or native)"),
    trait: str = typer.Option(..., help="trait whose questions and judge score the answers"),
    target: str = typer.Option("gemma3-270m", help="target model"),
    layer: int | None = typer.Option(None, help="layer to steer [default: the mapped layer]"),
    coefs: str = typer.Option("0,1,2,4", help="comma-separated coefficients (0 = unsteered)"),
    judge: str = typer.Option("embed", help="embed (fitted on the target's own contrastive answers), openai:MODEL or local:MODEL"),
    n_questions: int = typer.Option(8, help="held-out questions to answer"),
    max_new_tokens: int = typer.Option(40),
) -> None:
    """Steer the target with a vector over coefficients; trait, coherence and collapse per coefficient."""
    from ..extraction import ExtractionSettings, generate_pairs, question_groups  # noqa: PLC0415
    from ..judges import make_judges  # noqa: PLC0415
    from ..traits import load_trait  # noqa: PLC0415
    from ..transfer import evaluate_vector, verdict_of  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    loaded_trait = load_trait(trait)
    if not hasattr(loaded_trait, "eval_questions") or not loaded_trait.eval_questions:
        raise typer.BadParameter(f"'{trait}' has no evaluation questions: use a trait with questions (e.g. pirate)", param_hint="--trait")
    backbone = _common._load(target, None, None, None)
    steering = load_vector(vector, backbone=backbone)
    chosen = layer if layer is not None else steering.extra.get("transfer", {}).get("target_layer")
    if chosen is None:
        raise typer.BadParameter("this vector has no mapped layer: give --layer", param_hint="--layer")
    chosen = backbone.check_layer(chosen, allow_embedding=False)  # before the pairs are generated
    pairs = generate_pairs(backbone, loaded_trait, ExtractionSettings(n_questions=n_questions)) if judge == "embed" else []
    judges = make_judges(judge, loaded_trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs], question_groups(pairs))
    rows = evaluate_vector(
        backbone,
        steering.directions[chosen],
        chosen,
        parse_floats(coefs, "--coefs"),
        loaded_trait.eval_questions[:n_questions],
        judges,
        max_new_tokens=max_new_tokens,
    )
    table = Table("coef", "trait", "95% CI", "coherence", "collapsed", title=f"{vector.name} at layer {chosen}")
    for r in rows:
        table.add_row(
            f"{r['coef']:g}",
            f"{r['trait']:.1f}",
            f"[{r['trait_lo']:.1f}, {r['trait_hi']:.1f}]",
            f"{r['coherence']:.1f}",
            f"{100 * r['collapse_rate']:.0f}%",
        )
    out.print(table)
    expressed = None
    if getattr(judges.trait, "heldout_auroc", None) is not None:
        from ..expressibility import from_embedding_judge  # noqa: PLC0415

        verdict = from_embedding_judge(loaded_trait.name, judges.trait, len(pairs))
        expressed = verdict.expressed
        out.print(f"expressibility on {backbone.name}: {verdict.line()}", markup=False)
    out.print(f"verdict: {verdict_of(rows, vector.name, chosen, expressed).line()}", markup=False)
