"""Evaluation: sweeps, layer choice, reports, method comparison and the demo."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from ..errors import OptionError
from . import _common
from ._common import DeviceOpt, DtypeOpt, ModelOpt, RayActorsOpt, RayOpt, app, out, parse_numbers

if TYPE_CHECKING:
    from ..evaluate import SweepConfig
    from ..experiment import RunResult
    from ..expressibility import Expressibility
    from ..verdicts import Verdict


def _layer_specs(text: str) -> int | str | list[int | str]:
    """'8,12' or '8-12' -> those layers; 'auto' or 'auto:3' alone -> that string; a mix such as 'auto,auto:3,9' -> a list of both kinds."""
    from ..layer_list import parse_layers  # noqa: PLC0415

    items = parse_layers(text, words=("auto", "auto:"), option="--layers")
    return items[0] if len(items) == 1 and isinstance(items[0], str) else items


def _print_summary(summary: list[dict], title: str) -> None:
    from ..report import score_cell  # noqa: PLC0415

    table = Table("method", "layer", "coef", "n", "trait [95% CI]", "coherence [95% CI]", "collapsed", "ppl", title=title)
    for r in summary:
        table.add_row(
            r["method"],
            str(r["layer"]),
            f"{r['coef']:g}",
            str(r["n"]),
            score_cell(r["trait_mean"], r["trait_lo"], r["trait_hi"], r["trait_scored"], r["n"]),
            score_cell(r["coherence_mean"], r["coherence_lo"], r["coherence_hi"], r["coherence_scored"], r["n"]),
            f"{100 * r['collapse_rate']:.0f}%",
            f"{r['perplexity_mean']:.2f}",
        )
    out.print(table)


def _print_verdicts(verdicts: Iterable[Verdict], expressibility: Expressibility | None = None) -> None:
    """The run's conclusions, one line each (verdicts.py): what the table can and cannot say."""
    if expressibility is not None:
        out.print(f"expressibility: {expressibility.line()}", markup=False)
    for verdict in verdicts:
        out.print(f"verdict: {verdict.line()}", markup=False)


def _print_run(result: RunResult) -> None:
    if result.selection is not None:
        out.print(f"layer {result.selection.chosen} chosen: {result.selection.reason}")
        for blend in result.selection.blends.values():
            out.print(f"layers {blend.describe()}")
    _print_summary(result.summary, str(result.run_dir))
    _print_verdicts(result.verdicts, result.prepared.expressibility)
    out.print(f"results: {result.run_dir / 'results.jsonl'}")
    out.print(f"summary: {result.run_dir / 'summary.csv'}")
    if result.report:
        out.print(f"report:  {result.report}")


def _sweep_config(config: Path | None, overrides: dict[str, Any]) -> SweepConfig:
    from ..evaluate import SweepError, validate_config  # noqa: PLC0415

    data = {}
    if config is not None:
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SweepError(f"cannot read --config {config}: {getattr(exc, 'strerror', None) or exc}") from exc
        if not isinstance(data, dict):
            raise SweepError(
                f'--config {config} holds a JSON {type(data).__name__}, not an object of settings such as {{"trait": "pirate", "coefs": [0, 1, 2]}}'
            )
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(data)


@app.command()
def sweep(
    trait: str | None = typer.Option(None, "--trait", "-t", help="built-in trait or trait file [default: pirate]"),
    model: str | None = typer.Option(None, "--model", "-m", help="model spec [default: smollm2-135m]"),
    vector: str | None = typer.Option(
        None, "--vector", "-v", help="vector file (its .pairs.jsonl beside it feeds the embed judge); extracted when absent"
    ),
    lora: str | None = typer.Option(None, help="persona direction folder for method 'lora' (from `personactl lora extract`)"),
    adapter: str | None = typer.Option(None, help="persona adapter (registry name or folder) for method 'adapter'"),
    cap_at: str | None = typer.Option(
        None, "--cap-at", help="range for method 'cap', e.g. neg-p90 or -2:3.5 (its coefficients are strengths in [0, 1]) [default: neg-p90]"
    ),
    methods: str | None = typer.Option(
        None, help="comma-separated: vector, cap, prompt, lora, adapter, fewshot, modulation, api-prompt [default: vector]"
    ),
    coefs: str | None = typer.Option(None, help="coefficients, e.g. '-2,-1,0,1,2' [default]"),
    layers: str | None = typer.Option(
        None,
        help="layers, e.g. '8,12,16'; 'auto' (the best measured layer); 'auto:K' (the top K "
        "blended, coefficient split by measured effect); or a mix, e.g. 'auto,auto:3' [default: auto]",
    ),
    samples: int | None = typer.Option(None, help="answers per question and condition [default: 1]"),
    n_questions: int | None = typer.Option(None, help="first N evaluation questions [default: all]"),
    judge: str | None = typer.Option(None, help="embed (offline), local:MODEL or openai:MODEL [default: embed]"),
    temperature: float | None = typer.Option(None, help="0 = greedy [default: 0]"),
    max_new_tokens: int | None = typer.Option(None, help="[default: 48]"),
    seed: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="rows per generation batch (a batch is part of a sweep) [default: 32]"),
    positions: str | None = typer.Option(
        None,
        help="steered positions: all (every token) or response (the last prompt token "
        "and every new one, as persona_vectors steers; each question's prompt is then "
        "prefilled once for all coefficients, faster) [default: all]",
    ),
    name: str | None = typer.Option(None, help="run name: results go to OUT/NAME [default: sweep]"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    config: Path | None = typer.Option(None, help="JSON file with any of these settings (flags override it)"),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="hf (local); llamacpp: vector, lora, adapter and prompt run as their "
        "llama.cpp twins (llamacpp-vector ...; judges and perplexity stay on the hf model); or "
        "openai:MODEL: where modulation, api-prompt and "
        "fewshot generate (base URL / key: PERSONACTL_API_BASE_URL / PERSONACTL_API_KEY) [default: hf]",
    ),
    ray: str | None = RayOpt,
    ray_actors: int = RayActorsOpt,
) -> None:
    """Sweep coefficients (x layers x methods) over held-out questions, judged; resumable; writes a report.

    With --ray, the records' batches are spread over Ray actors (one model each); this process judges and writes
    results.jsonl, so a run resumes the same way with or without --ray."""
    from ..experiment import run as run_experiment  # noqa: PLC0415

    cfg = _sweep_config(
        config,
        {
            "trait": trait,
            "model": model,
            "vector": vector,
            "lora": lora,
            "adapter": adapter,
            "cap_at": cap_at,
            "samples": samples,
            "n_questions": n_questions,
            "judge": judge,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "batch_size": batch_size,
            "name": name,
            "positions": positions,
            "backend": backend,
            "methods": [m.strip() for m in methods.split(",")] if methods else None,
            "coefs": parse_numbers(coefs) if coefs else None,
            "layers": _layer_specs(layers) if layers else None,
        },
    )
    if ray is None:
        _print_run(run_experiment(cfg, out_dir, backbone=_common._load(cfg.model, device, dtype, None)))
        return
    from ..evaluate import ResultsFile, claim_run_dir  # noqa: PLC0415
    from ..scaleout import Ending, run_on_ray  # noqa: PLC0415

    run_dir = out_dir / cfg.name
    if (run_dir / "config.json").exists():
        claim_run_dir(cfg, run_dir)  # another config is refused before Ray is reached or any actor loads a model
    run_on_ray(
        ray,
        partial(_sweep_on_ray, cfg, out_dir, ray, ray_actors, device, dtype),
        Ending(lambda: f"{len(ResultsFile(run_dir / 'results.jsonl').records)} records kept"),
    )


def _sweep_on_ray(cfg: SweepConfig, out_dir: Path, ray: str, actors: int, device: str | None, dtype: str | None) -> None:
    """The sweep on Ray actors; against a cluster it runs in the driver process of personactl.scaleout.driver."""
    from ..experiment import run as run_experiment  # noqa: PLC0415
    from ..scaleout import PoolSettings, RayRunner, ray_pool  # noqa: PLC0415

    with ray_pool(ray, PoolSettings(cfg.model, actors, device=device)) as pool:
        out.print(f"Ray ({ray}): {actors} workers, {pool.threads} thread(s) each" + (f", {pool.gpus:g} GPU each" if pool.gpus else ""))
        _print_run(run_experiment(cfg, out_dir, backbone=_common._load(cfg.model, device, dtype, None), runner=partial(RayRunner, pool)))


@app.command()
def layers(
    trait: str = typer.Option("pirate", "--trait", "-t", help="built-in trait or trait file"),
    model: str = ModelOpt,
    vector: str | None = typer.Option(None, "--vector", "-v", help="vector file with its .pairs.jsonl; extracted when absent"),
    judge: str = typer.Option("embed", help="embed, local:MODEL or openai:MODEL"),
    name: str = typer.Option("layers", help="run name: files go to OUT/NAME"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    top: int = typer.Option(3, "--top", help="show the weights of the top K measured layers (what --layers auto:K steers)"),
    device: str | None = DeviceOpt,
) -> None:
    """Per-layer effectiveness (AUROC, Cohen's d, measured steering effect), the auto layer choice and the auto:K weights."""
    from ..evaluate import validate_config  # noqa: PLC0415
    from ..experiment import choose_layers, prepare  # noqa: PLC0415
    from ..layer_selection import check_blend_size, layer_weights  # noqa: PLC0415
    from ..report import plot_layer_scores  # noqa: PLC0415

    if top < 1:
        raise OptionError(f"--top {top}: give at least 1 layer")

    cfg = validate_config({"name": name, "trait": trait, "model": model, "vector": vector, "judge": judge, "layers": "auto"})
    backbone = _common._load(model, device, None, None)
    check_blend_size(top, backbone.n_layers)
    prep = prepare(cfg, out_dir, backbone)
    _, selection = choose_layers(prep)
    assert selection is not None
    blend = layer_weights(selection.rows, top, backbone.n_layers)
    table = Table("layer", "AUROC", "Cohen's d", "effect", "coherence", f"auto:{top} weight")
    for r in selection.rows:
        mark = " *" if r.layer == selection.chosen else ""
        table.add_row(
            f"{r.layer}{mark}",
            f"{r.auroc:.3f}",
            f"{r.cohens_d:.2f}",
            "" if r.effect is None else f"{r.effect:+.1f}",
            "" if r.coherence is None else f"{r.coherence:.0f}",
            f"{blend.weights[r.layer]:.2f}" if r.layer in blend.weights else "",
        )
    out.print(table)
    out.print(f"layer {selection.chosen} chosen: {selection.reason}")
    out.print(f"layers {blend.describe()} (coefficient c adds c * weight * v[l] at each layer l; the weights sum to 1)")
    out.print(f"scores: {prep.run_dir / 'layers.json'}")
    out.print(f"plot:   {plot_layer_scores(prep.run_dir)}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder (runs/NAME) with results.jsonl")) -> None:
    """Write report.html (figures embedded) for a run folder."""
    from ..report import write_report  # noqa: PLC0415

    out.print(f"report: {write_report(run_dir)}")


@app.command()
def compare(
    lora: str = typer.Option(..., help="persona direction folder (from `personactl lora extract`)"),
    trait: str = typer.Option("pirate", "--trait", "-t", help="built-in trait or trait file"),
    model: str = ModelOpt,
    vector: str | None = typer.Option(None, "--vector", "-v", help="persona vector (+ .pairs.jsonl); extracted when absent"),
    coefs: str = typer.Option("-2,-1,0,1,2", help="coefficients for both methods"),
    layers: str = typer.Option("auto", help="activation-steering layer, or 'auto'"),
    samples: int = typer.Option(1),
    n_questions: int | None = typer.Option(None),
    temperature: float = typer.Option(0.0),
    judge: str = typer.Option("embed"),
    name: str = typer.Option("compare", help="run name: files go to OUT/NAME"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    device: str | None = DeviceOpt,
) -> None:
    """Activation vs LoRA steering: trait/coherence vs coefficient, latency, residual-stream geometry."""
    from ..lora import compare as run_compare  # noqa: PLC0415

    cfg = _sweep_config(
        None,
        {
            "trait": trait,
            "model": model,
            "vector": vector,
            "lora": lora,
            "coefs": parse_numbers(coefs),
            "samples": samples,
            "n_questions": n_questions,
            "temperature": temperature,
            "judge": judge,
            "name": name,
            "layers": _layer_specs(layers),
        },
    )
    result = run_compare(cfg, out_dir, backbone=_common._load(model, device, None, None))
    _print_summary(result.summary, f"{result.run_dir} (activation layer {result.layer})")
    _print_verdicts(result.verdicts)
    table = Table("mode", "tokens/s", "ratio to unsteered", title="latency")
    for t in result.latency:
        table.add_row(t.mode, f"{t.tokens_per_second:.1f}", f"{t.ratio_to_unsteered:.3f}")
    out.print(table)
    best = max(result.geometry, key=lambda s: abs(s.cosine_with_vector))
    out.print(f"dW shift vs persona vector: largest |cosine| {best.cosine_with_vector:+.3f} at layer {best.layer}")
    for path in result.written:
        out.print(f"written: {path}")


@app.command()
def demo(
    model: str = ModelOpt,
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    device: str | None = DeviceOpt,
) -> None:
    """The main job: extract pirate and silly, choose layers, sweep, judge offline, report; says how long it took."""
    import time  # noqa: PLC0415

    from ..demo import run_demo  # noqa: PLC0415

    started = time.monotonic()
    backbone = _common._load(model, device, None, None)
    for result in run_demo(backbone, out_dir):
        _print_run(result)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    out.print(f"demo done in {minutes} min {seconds:02d} s (model load included)")
