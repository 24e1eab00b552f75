"""`personactl bench`: which method moves a persona best, at what cost, on one budget."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..errors import OptionError
from . import _common
from ._common import DeviceOpt, ModelOpt, RayActorsOpt, RayOpt, app, out

if TYPE_CHECKING:
    from ..bench import BenchConfig, BenchReport
    from ..experiment import RunnerFactory
    from ..models import Backbone


@app.command()
def bench(
    out_dir: Path = typer.Option(..., "--out", "-o", help="bench folder (config, one folder per trait, leaderboard, report)"),
    model: str = ModelOpt,
    traits: str | None = typer.Option(None, help="comma-separated built-in traits or trait files, e.g. pirate,silly"),
    all_traits: bool = typer.Option(False, "--all", help="every built-in trait"),
    methods: str | None = typer.Option(
        None, help="comma-separated, of none, prompt, fewshot, vector, multilayer, adapter, llamacpp-vector, cap [default: all; none is always in]"
    ),
    judge: str | None = typer.Option(None, help="embed (offline), local:MODEL or openai:MODEL [default: embed]"),
    floor: float | None = typer.Option(None, help="mean coherence a tuned strength must keep [default: 50]"),
    extraction_questions: int | None = typer.Option(
        None, help="the first N extraction questions extract the vector; the rest tune every method's strength [default: 16]"
    ),
    n_questions: int | None = typer.Option(None, help="first N evaluation questions scored [default: all]"),
    samples: int | None = typer.Option(None, help="answers per question and method (more than 1 needs --temperature > 0) [default: 1]"),
    temperature: float | None = typer.Option(None, help="0 = greedy [default: 0]"),
    max_new_tokens: int | None = typer.Option(None, help="[default: 48]"),
    seed: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="rows per generation batch [default: 32]"),
    blend: int | None = typer.Option(None, help="layers the multilayer method blends (auto:K) [default: 3]"),
    adapter_epochs: int | None = typer.Option(None, help="epochs of the persona adapter [default: 3]"),
    keep_unexpressed: bool = typer.Option(False, help="also bench traits the model does not express (skipped by default)"),
    device: str | None = DeviceOpt,
    ray: str | None = RayOpt,
    ray_actors: int = RayActorsOpt,
) -> None:
    """Every method on the same questions, seeds, judge and answer length; strengths tuned on held-out extraction
    questions, scored once on the evaluation questions; a leaderboard with CIs by question and paired differences.

    Traits the model does not express are skipped (their AUROC is listed). Resumable: re-run the same command."""
    from ..bench import bench_config, claim_bench  # noqa: PLC0415
    from ..traits import builtin_traits  # noqa: PLC0415

    if all_traits == (traits is not None):
        raise OptionError("give --traits a,b,c or --all (every built-in trait), not both")
    config = bench_config(
        {
            "model": model,
            "traits": builtin_traits() if all_traits else (traits or "").split(","),
            "methods": [m.strip() for m in methods.split(",")] if methods else None,
            "judge": judge,
            "floor": floor,
            "extraction_questions": extraction_questions,
            "n_questions": n_questions,
            "samples": samples,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "batch_size": batch_size,
            "blend": blend,
            "adapter_epochs": adapter_epochs,
            "keep_unexpressed": keep_unexpressed,
        }
    )
    claim_bench(config, out_dir)  # a bad trait or another bench's folder is refused before any model loads
    if ray is None:
        _print(_run(config, out_dir, _common._load(model, device, None, None), None))
        return
    from ..bench import count_records  # noqa: PLC0415
    from ..scaleout import Ending, run_on_ray  # noqa: PLC0415

    run_on_ray(ray, partial(_bench_on_ray, config, out_dir, ray, ray_actors, device), Ending(lambda: f"{count_records(out_dir)} records kept"))


def _run(config: BenchConfig, out_dir: Path, backbone: Backbone, runner: RunnerFactory | None) -> BenchReport:
    from ..bench import run_bench, write_bench_report  # noqa: PLC0415

    return write_bench_report(run_bench(config, out_dir, backbone, runner))


def _bench_on_ray(config: BenchConfig, out_dir: Path, ray: str, actors: int, device: str | None) -> None:
    from ..scaleout import PoolSettings, RayRunner, ray_pool  # noqa: PLC0415

    with ray_pool(ray, PoolSettings(config.model, actors, device=device)) as pool:
        out.print(f"Ray ({ray}): {actors} workers, {pool.threads} thread(s) each")
        _print(_run(config, out_dir, _common._load(config.model, device, None, None), partial(RayRunner, pool)))


def _print(written: BenchReport) -> None:
    from ..bench import BENCH_COLUMNS  # noqa: PLC0415

    for trait in written.result.traits:
        if trait.status == "skipped":
            out.print(f"skipped: {trait.reason}")
            continue
        table = Table(*BENCH_COLUMNS, title=trait.trait)
        for row in written.table(trait.trait):
            table.add_row(*(row[c] for c in BENCH_COLUMNS))
        out.print(table)
        for label, why in trait.left_out.items():
            out.print(f"{label}: left out: {why}")
    for line in written.verdicts:
        out.print(line)
    for path in written.paths:
        out.print(f"written: {path}")
