"""`personactl safety ...`: thin commands over personactl.safety (each step resumable from its files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from . import _common
from ._common import out

if TYPE_CHECKING:
    from ..models import Backbone

safety_app = typer.Typer(
    help="Safety-critical neurons: align a model to refuse, find the weights that carry refusal (Wanda, set difference), "
    "prune-check them, fine-tune with them frozen, and measure how their scores move.",
    no_args_is_help=True,
)
ModelOpt = typer.Option("smollm2-135m", "--model", "-m", help="alias, HF folder or .gguf file")


def _load(model: str) -> Backbone:
    return _common._load(model, None, None, None)


def _print(text: str) -> None:
    out.print(text, highlight=False)


def _print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    out.print(table)


def _rate(measure: dict) -> str:
    from ..safety import format_rate  # noqa: PLC0415

    return format_rate(measure["keyword"])


@safety_app.command("align")
def align_cmd(
    out_dir: Path = typer.Option(..., "--out", "-o", help="model folder to write (e.g. models/smollm2-safe)"),
    model: str = ModelOpt,
    lora: bool = typer.Option(False, "--lora", help="train a LoRA and merge it, instead of every weight"),
) -> None:
    """Fine-tune the model to refuse harmful requests (team-written data) and report refusal before and after."""
    from ..lora import check_out_dir  # noqa: PLC0415
    from ..safety import align  # noqa: PLC0415

    check_out_dir(out_dir)
    card = align(_load(model), out_dir, lora=lora)
    rows = [
        {
            "model": k,
            "refusal": _rate(card[k]["refusal"]),
            "over-refusal": _rate(card[k]["over_refusal"]),
            "utility ppl": f"{card[k]['utility_perplexity']:.2f}",
        }
        for k in ("before", "after")
    ]
    _print_table("held-out requests (phrase matcher, 95% CI)", rows, list(rows[0]))
    _print(f"aligned model written to {out_dir}")


@safety_app.command("identify")
def identify_cmd(
    out_dir: Path = typer.Option(..., "--out", "-o", help="folder for scores, masks and identify.json"),
    model: str = ModelOpt,
    sparsity: float = typer.Option(0.03, help="top fraction by safety score, per matrix (0-1)"),
    utility_sparsity: float = typer.Option(0.03, help="top fraction by utility score removed from it (0-1)"),
    nsamples: int = typer.Option(128, help="calibration examples of each kind"),
    reference_pt: bool = typer.Option(False, "--reference-pt", help="also write original_safety_scores.pt / original_safety_masks.pt"),
) -> None:
    """Wanda scores on safety and utility data; safety-critical = top-q% safety minus top-p% utility (per matrix)."""
    from .._io import check_replaceable  # noqa: PLC0415
    from ..safety import SUMMARY, IdentifySettings, identify  # noqa: PLC0415

    settings = IdentifySettings(model=model, sparsity=sparsity, utility_sparsity=utility_sparsity, nsamples=nsamples)
    check_replaceable(out_dir, SUMMARY)
    summary = identify(_load(model), out_dir, settings, reference_pt=reference_pt)
    _print(
        f"{summary['masked']} safety-critical weights ({100 * summary['fraction']:.2f}% of the block linear weights); "
        f"top-{100 * sparsity:g}% safety alone: {summary['safety_only']}"
    )
    _print(f"scores and masks written to {out_dir}")


@safety_app.command("prune-check")
def prune_check_cmd(identify_dir: Path = typer.Argument(..., help="folder written by `safety identify`")) -> None:
    """Zero the masked weights (restored after) and measure refusal and utility perplexity, against random and safety-only masks."""
    from ..safety import PRUNE_CHECK, prune_check, require_summary  # noqa: PLC0415

    summary = require_summary(identify_dir)
    result = prune_check(_load(summary["settings"]["model"]), identify_dir)
    rows = [
        {"weights zeroed": n.replace("_", " "), "count": v["pruned"], "refusal": _rate(v["refusal"]), "utility ppl": f"{v['utility_perplexity']:.2f}"}
        for n, v in result["variants"].items()
    ]
    _print_table("prune check (held-out harmful requests)", rows, list(rows[0]))
    _print(f"written to {identify_dir / PRUNE_CHECK}")


@safety_app.command("finetune")
def finetune_cmd(
    frozen_masks: Path = typer.Option(..., "--frozen", help="identify folder (its masks) or a mask file (.safetensors / reference .pt)"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="adapter (--peft) or model (--full) folder to write"),
    data: Path | None = typer.Option(None, help="JSONL {instruction, output} to fine-tune on (default: the shipped utility set)"),
    model: str | None = typer.Option(None, "--model", "-m", help="default: the model of the identify folder"),
    peft: bool = typer.Option(False, "--peft/--full", help="LoRA on the frozen base, or every weight with the mask frozen"),
    r: int = typer.Option(8, "--r", help="LoRA rank"),
    alpha: float = typer.Option(16.0, help="LoRA alpha"),
    targets: str = typer.Option("q_proj,v_proj", help="LoRA target modules, comma-separated"),
    freeze: str = typer.Option("safety", help="safety (the masks), random (same count per matrix; the control) or none"),
    epochs: int = typer.Option(1),
    learning_rate: float | None = typer.Option(None, "--lr", help="default: 1e-4 full, 1e-3 LoRA"),
) -> None:
    """Fine-tune with the masked weights frozen (bit-identical, verified) or a control (random mask, nothing frozen)."""
    from dataclasses import replace  # noqa: PLC0415

    from ..lora import check_out_dir  # noqa: PLC0415
    from ..safety import (  # noqa: PLC0415
        FULL_UTILITY,
        LORA_UTILITY,
        MASKS,
        RANDOM_MASKS,
        SafetyError,
        chat_examples,
        frozen_finetune,
        load_masks,
        random_like,
        read_summary,
    )

    if freeze not in ("safety", "random", "none"):
        raise SafetyError(f"--freeze must be safety, random or none, not '{freeze}'")
    check_out_dir(out_dir)
    summary = read_summary(frozen_masks) if frozen_masks.is_dir() else None
    backbone = _load(model or (summary["settings"]["model"] if summary else "smollm2-135m"))
    masks = load_masks(backbone, frozen_masks)
    if freeze == "random":
        masks = load_masks(backbone, frozen_masks / RANDOM_MASKS) if summary else random_like(masks)
    base = LORA_UTILITY if peft else FULL_UTILITY
    config = replace(base, epochs=epochs, learning_rate=learning_rate or base.learning_rate)
    if peft:
        config = replace(config, rank=r, alpha=alpha, target_modules=tuple(t.strip() for t in targets.split(",") if t.strip()))
    examples = chat_examples(backbone, data or "benign_train")
    card = frozen_finetune(backbone, examples, out_dir, None if freeze == "none" else masks, peft=peft, config=config, freeze_label=freeze)
    _print(
        f"{len(card['losses'])} steps on {card['n_train']} examples, {card['frozen_weights']} weights frozen ({freeze}), "
        f"final loss {card['losses'][-1]:.3f}"
    )
    _print(f"{'adapter' if peft else 'model'} written to {out_dir}" + (f" (frozen masks from {frozen_masks / MASKS})" if summary else ""))


@safety_app.command("dynamics")
def dynamics_cmd(
    identify_dir: Path = typer.Argument(..., help="folder written by `safety identify` (scores before, masks)"),
    after: list[Path] = typer.Option(..., "--after", help="fine-tuned model folder or adapter (repeat for several)"),
    before: str | None = typer.Option(None, help="the model the masks were found on (default: the identify folder's)"),
) -> None:
    """Recompute Wanda scores after fine-tuning: change of frozen vs other vs random weights, refusal, verdict A/B."""
    from .._io import write_text_atomic  # noqa: PLC0415
    from ..safety import DYNAMICS, HeldOut, Reference, format_change, measure_finetune, require_summary  # noqa: PLC0415

    backbone = _load(before or require_summary(identify_dir)["settings"]["model"])
    held_out, reference = HeldOut.for_model(backbone), Reference.load(backbone, identify_dir)
    rows = []
    for folder in after:
        result = measure_finetune(backbone, reference, folder, held_out)
        write_text_atomic(folder / DYNAMICS, json.dumps(result, indent=2))
        overall = result["scores"]["overall"]
        rows.append(
            {
                "fine-tune": str(folder),
                "refusal": _rate(result["refusal"]),
                **{f"{g} change": format_change(overall[f"{g}_mean"]) for g in ("frozen", "others", "random")},
                "verdict": result["scores"]["verdict"],
            }
        )
        _print(f"written to {folder / DYNAMICS}")
    _print_table("Wanda score dynamics (mean relative change, 95% CI over matrices)", rows, list(rows[0]))


@safety_app.command("plot")
def plot_cmd(run_dir: Path = typer.Argument(..., help="a `safety run` folder (results.json)")) -> None:
    """Figures (histograms, per-block change, statistics) and a self-contained report.html."""
    from ..safety import write_report  # noqa: PLC0415

    _print(f"report written to {write_report(run_dir)}")


@safety_app.command("run")
def run_cmd(
    out_dir: Path = typer.Option(Path("runs/safety"), "--out", "-o", help="run folder (re-running resumes it)"),
    model: str = ModelOpt,
    sparsity: float = typer.Option(0.03),
    utility_sparsity: float = typer.Option(0.03),
    nsamples: int = typer.Option(128),
) -> None:
    """align -> identify -> prune-check -> fine-tunes (full, LoRA x safety, none, random frozen) -> dynamics -> report."""
    from .._io import check_replaceable  # noqa: PLC0415
    from ..safety import RUN_MARKERS, IdentifySettings, results_markdown, run_safety, write_report  # noqa: PLC0415

    IdentifySettings(model=model, sparsity=sparsity, utility_sparsity=utility_sparsity, nsamples=nsamples)  # bad values fail before any work
    check_replaceable(out_dir, RUN_MARKERS)
    results = run_safety(model, out_dir, settings={"sparsity": sparsity, "utility_sparsity": utility_sparsity, "nsamples": nsamples})
    _print(results_markdown(results))
    for name, f in results["finetunes"].items():
        _print(f"{name}: {f['scores']['verdict']}")
    _print(f"report written to {write_report(out_dir)}")
