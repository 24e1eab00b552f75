"""Persona vectors to and from other tools: `export vector` and `import vector` (personactl.portable)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _common
from ._common import ModelOpt, err, export_app, import_app, out

FORMATS_HELP = "llamacpp, repeng, steering-vectors, persona-vectors or safetensors (docs: portable vectors)"


@export_app.command("vector")
def export_vector(
    vector: Path = typer.Argument(..., help="persona vector file (.safetensors)"),
    fmt: str = typer.Option(..., "--format", "-f", help=FORMATS_HELP),
    out_path: Path = typer.Option(..., "--out", "-o", help="file to write (.gguf for llamacpp and repeng, .pt, .safetensors)"),
    layers: str = typer.Option(
        "all", help="our layers (layer l = output of block l-1): 'all' (every non-zero one the format holds), 18-28 or 18,20,24-26"
    ),
    coef: float = typer.Option(1.0, help="scale the directions written (the tool's own strength multiplies again)"),
    model: str = ModelOpt,
) -> None:
    """Write a persona vector in another tool's format, with its convention (layers, operation, model) recorded."""
    from ..layer_list import layer_numbers  # noqa: PLC0415
    from ..portable import export_vector as run_export  # noqa: PLC0415
    from ..portable import vector_format  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    spec = vector_format(fmt)
    chosen = None if layers.strip().lower() == "all" else layer_numbers(layers, "--layers")
    loaded = load_vector(vector)
    backbone = _common._load(model, None, None, None)
    run_export(loaded, out_path, spec.name, layers=chosen, coef=coef, backbone=backbone)
    out.print(f"{spec.tool} vector written to {out_path}; use it with: {spec.usage.format(path=out_path)}", highlight=False, markup=False)


@import_app.command("vector")
def import_vector(
    file: Path = typer.Argument(..., help="a vector file of another tool"),
    source_format: str = typer.Option(..., "--from", help=FORMATS_HELP),
    out_path: Path = typer.Option(..., "--out", "-o", help="persona vector file to write (.safetensors)"),
    model: str = ModelOpt,
) -> None:
    """Read another tool's vector file into a persona vector, checked against the model; says what it had to assume."""
    import warnings  # noqa: PLC0415

    from ..portable import import_vector as run_import  # noqa: PLC0415
    from ..portable import read_source  # noqa: PLC0415

    read_source(file, source_format)  # a file of another format fails before the model loads
    backbone = _common._load(model, None, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        vector = run_import(file, source_format, backbone)
    for warning in caught:
        err.print(f"note: {warning.message}", highlight=False, markup=False, soft_wrap=True)
    vector.save(out_path)
    out.print(f"persona vector (layers {vector.extra['layers']}) written to {out_path}", highlight=False)
    out.print(f"assumed: {vector.extra['assumed']}", highlight=False, markup=False)
