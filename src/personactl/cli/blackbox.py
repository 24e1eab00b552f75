"""llama.cpp interchange: LoRA directions and adapters as GGUF LoRA files (vectors: cli/portable.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _common
from ._common import ModelOpt, export_app, out


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
