"""llama.cpp interchange: control vectors and LoRA adapters as GGUF, and their import."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _common
from ._common import ModelOpt, err, export_app, import_app, out


@export_app.command("cvec")
def export_cvec(
    vector: Path = typer.Argument(..., help="persona vector file (.safetensors)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="control vector file to write (.gguf)"),
    layers: str = typer.Option("all", help="our layers (2..N; layer l = output of block l-1): 'all' (every non-zero one), 18-28 or 18,20,24-26"),
    coef: float = typer.Option(1.0, help="scale the directions written (llama.cpp's --control-vector-scaled multiplies again)"),
    model: str = ModelOpt,
) -> None:
    """Write a persona vector as a llama.cpp control vector: our layer l becomes direction.(l-1)."""
    from ..blackbox import parse_layers, write_control_vector  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    chosen = parse_layers(layers)
    loaded = load_vector(vector)
    backbone = _common._load(model, None, None, None)
    write_control_vector(loaded, out_path, layers=chosen, coef=coef, backbone=backbone)
    out.print(f"control vector written to {out_path}: use `llama-cli -m MODEL.gguf --control-vector-scaled {out_path} 1.0`")


@export_app.command("gguf-lora")
def export_gguf_lora(
    folder: Path = typer.Argument(..., help="a LoRA persona direction (lora extract OUT or OUT/diff) or a persona adapter folder"),
    out_path: Path = typer.Option(..., "--out", "-o", help="llama.cpp LoRA adapter file to write (.gguf)"),
    model: str = ModelOpt,
) -> None:
    """Write a LoRA direction or persona adapter as a llama.cpp LoRA adapter (GGUF) for the base model."""
    from ..blackbox import load_lora_folder, write_gguf_lora  # noqa: PLC0415

    direction = load_lora_folder(folder)
    backbone = _common._load(model, None, None, None)
    write_gguf_lora(direction, out_path, backbone)
    out.print(f"LoRA adapter written to {out_path}: use `llama-cli -m MODEL.gguf --lora {out_path}` (or --lora-scaled {out_path} S)")


@import_app.command("cvec")
def import_cvec(
    file: Path = typer.Argument(..., help="a llama.cpp or repeng control vector (.gguf)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="persona vector file to write (.safetensors)"),
    model: str = ModelOpt,
) -> None:
    """Read a llama.cpp / repeng control vector into a persona vector: direction.N becomes our layer N+1."""
    import warnings  # noqa: PLC0415

    from ..blackbox import read_control_vector  # noqa: PLC0415

    read_control_vector(file)  # a file that is no control vector fails before the model loads
    backbone = _common._load(model, None, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        vector = read_control_vector(file, backbone)
    for warning in caught:
        err.print(f"note: {warning.message}", highlight=False, markup=False, soft_wrap=True)
    vector.save(out_path)
    out.print(f"persona vector (layers {vector.extra['layers']}) written to {out_path}")
