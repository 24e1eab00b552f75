"""What every command module shares: the app and its sub-apps, consoles, common options, the model loader."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, cast

import typer
from rich.console import Console

from ..errors import OptionError

if TYPE_CHECKING:
    from ..models import Backbone
    from ..vectors import TensorFormat

app = typer.Typer(
    help="Find, measure, steer and move the character traits (personas) of language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


traits_app = typer.Typer(help="List, show and generate trait definitions.", no_args_is_help=True)


app.add_typer(traits_app, name="traits")


lora_app = typer.Typer(help="Weight-space personas: LoRA persona directions (pos - neg), SVD.", no_args_is_help=True)


app.add_typer(lora_app, name="lora")


adapter_app = typer.Typer(help="Plug-and-play persona adapters: train from JSONL, list, show, merge.", no_args_is_help=True)


app.add_typer(adapter_app, name="adapter")


transfer_app = typer.Typer(help="Cross-model transfer: carry a persona vector from one model family to another.", no_args_is_help=True)


app.add_typer(transfer_app, name="transfer")


condition_app = typer.Typer(
    help="Conditional steering: find a condition (direction, layer, threshold) from two sets of prompts.", no_args_is_help=True
)


app.add_typer(condition_app, name="condition")


export_app = typer.Typer(
    help="Export personas to other tools: vectors (llama.cpp, repeng, steering-vectors, ...), LoRAs as GGUF adapters or merged into a GGUF model.",
    no_args_is_help=True,
)


app.add_typer(export_app, name="export")


import_app = typer.Typer(
    help="Import persona vectors from other tools (llama.cpp, repeng, steering-vectors, persona_vectors, safetensors).", no_args_is_help=True
)


app.add_typer(import_app, name="import")


out = Console(soft_wrap=True)  # paths stay on one line


err = Console(stderr=True)


ModelOpt = typer.Option("smollm2-135m", "--model", "-m", help="alias (smollm2-135m, gemma3-270m), HF folder, .gguf file or hub id")


DeviceOpt = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: where transformers puts it)")


DtypeOpt = typer.Option(None, help="float32, float16, bfloat16 or auto")


DeviceMapOpt = typer.Option(None, "--device-map", help="'auto' spreads a big model over GPUs (accelerate)")


FormatOpt = typer.Option(None, "--format", help="vector file format: safetensors, pt or npy (default: by suffix)")


def _load(model: str, device: str | None, dtype: str | None, device_map: str | None, quantize: str | None = None) -> Backbone:
    import warnings  # noqa: PLC0415

    from ..models import load_model  # noqa: PLC0415 - keep --help fast

    with err.status(f"loading {model} ..."), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        backbone = load_model(model, device=device, dtype=dtype, device_map=device_map, quantize=quantize)
    for warning in caught:
        if "--quantize" in str(warning.message):
            err.print(f"note: {warning.message}")
    return backbone


RayOpt = typer.Option(
    None,
    "--ray",
    help="spread the work over Ray actors: local (a Ray started here, stopped after), auto (the "
    "running cluster) or HOST:PORT / ray://HOST:PORT; needs pip install 'personactl[ray]'",
)


RayActorsOpt = typer.Option(2, "--ray-actors", help="Ray actors (one model each; on a GPU cluster one GPU each)")


def parse_numbers(text: str, kind: type = float) -> list:
    """'-2,-1,0' or '-2 -1 0' -> numbers (typer has no multi-value options)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [kind(p) for p in parts]
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}' is not a list of numbers such as '-2,-1,0,1,2'") from exc


def parse_number(text: str, option: str) -> float:
    """A finite number given as text (so a mistake is one `error:` line, not click's usage block)."""
    import math  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise OptionError(f"{option} {text!r} is not a number: give e.g. {option} 0.5")
    return value


def check_choice(value: str, choices: Collection[str], option: str) -> None:

    if value not in choices:
        raise OptionError(f"{option} {value!r} is not one of: {', '.join(choices)}")


def tensor_format(value: str | None) -> TensorFormat | None:
    """`--format` checked against the vector file formats; None leaves the format to the file's suffix."""
    from typing import get_args  # noqa: PLC0415

    from .. import vectors  # noqa: PLC0415 - imports torch

    if value is None:
        return None
    check_choice(value, get_args(vectors.TensorFormat), "--format")
    return cast("TensorFormat", value)


def parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of numbers", param_hint=option) from exc
