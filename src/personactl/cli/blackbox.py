"""llama.cpp interchange: LoRA directions and adapters as GGUF LoRA files or merged GGUF models (vectors: cli/portable.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _common
from ._common import ModelOpt, export_app, out

FolderArg = typer.Argument(..., help="a LoRA persona direction (lora extract OUT or OUT/diff) or a persona adapter folder")


@export_app.command("gguf-lora")
def export_gguf_lora(
    folder: Path = FolderArg,
    out_path: Path = typer.Option(..., "--out", "-o", help="llama.cpp LoRA adapter file to write (.gguf)"),
    model: str = ModelOpt,
    rank: int | None = typer.Option(
        None,
        "--rank",
        help="write a lower-rank LoRA: each module's delta truncated by SVD to this rank (llama.cpp's per-token cost "
        "falls with it); prints and stores the share of the delta's energy kept [default: the adapter's rank]",
    ),
) -> None:
    """Write a LoRA direction or persona adapter as a llama.cpp LoRA adapter (GGUF) for the base model."""
    from ..blackbox import load_lora_folder, write_gguf_lora  # noqa: PLC0415
    from ..lora import energy_line, lower_rank  # noqa: PLC0415

    direction = load_lora_folder(folder)
    if rank is not None:
        direction, energy = lower_rank(direction, rank)
        out.print(energy_line(rank, energy))
    backbone = _common._load(model, None, None, None)
    write_gguf_lora(direction, out_path, backbone)
    out.print(f"LoRA adapter written to {out_path}: use `llama-cli -m MODEL.gguf --lora {out_path}` (or --lora-scaled {out_path} S)")


@export_app.command("gguf-merged")
def export_gguf_merged(
    folder: Path = FolderArg,
    out_path: Path = typer.Option(..., "--out", "-o", help="GGUF model file to write (.gguf)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="the base GGUF: an embedded model's alias or a .gguf file"),
    scale: float = typer.Option(1.0, "--scale", help="the persona's fixed scale: W + scale * dW"),
    weights: str = typer.Option(
        "q8_0",
        "--weights",
        help="type of the merged weights: q8_0, f16, f32, or source (re-quantized to the base's own type, Q4_1 for "
        "smollm2-135m: a 4-bit grid loses most of a persona delta, the command says how much it kept)",
    ),
) -> None:
    """Fold a LoRA persona into a GGUF model at a fixed scale: a model llama.cpp runs with no LoRA cost per token."""
    from ..blackbox import WEIGHT_TYPES, load_lora_folder, resolve_gguf, write_merged_gguf  # noqa: PLC0415
    from ..errors import OptionError  # noqa: PLC0415
    from ..models import EMBEDDED_MODELS  # noqa: PLC0415

    _common.check_choice(weights, WEIGHT_TYPES, "--weights")
    if model not in EMBEDDED_MODELS and not model.lower().endswith(".gguf"):
        raise OptionError(f"--model {model!r} is no GGUF model: the merged file is written from one (an alias or a .gguf file)")
    source = resolve_gguf(model)
    direction = load_lora_folder(folder)
    backbone = _common._load(model, None, None, None)
    merged = write_merged_gguf(direction, out_path, backbone, source, scale=scale, weights=weights)
    out.print(merged.summary())
    out.print(f"use `llama-cli -m {out_path}` (no --lora: the persona is in the weights at scale {scale:g})")
