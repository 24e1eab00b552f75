"""The `personactl` command line: parse, call the API, print. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import demo as api_demo
from .errors import PersonactlError

app = typer.Typer(
    help="Find, measure, steer and move the character traits (personas) of language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
traits_app = typer.Typer(help="List and show trait definitions.", no_args_is_help=True)
app.add_typer(traits_app, name="traits")

out = Console()
err = Console(stderr=True)

ModelOpt = typer.Option("smollm2-135m", "--model", "-m", help="alias (smollm2-135m, gemma3-270m), HF folder, .gguf file or hub id")
DeviceOpt = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: where transformers puts it)")
DtypeOpt = typer.Option(None, help="float32, float16, bfloat16 or auto")
DeviceMapOpt = typer.Option(None, "--device-map", help="'auto' spreads a big model over GPUs (accelerate)")
FormatOpt = typer.Option(None, "--format", help="vector file format: safetensors, pt or npy (default: by suffix)")


def _load(model: str, device: Optional[str], dtype: Optional[str], device_map: Optional[str]):
    from .models import load_model  # noqa: PLC0415 - keep --help fast

    with err.status(f"loading {model} ..."):
        return load_model(model, device=device, dtype=dtype, device_map=device_map)


@traits_app.command("list")
def traits_list() -> None:
    """List the built-in traits."""
    from .traits import builtin_traits, load_trait  # noqa: PLC0415

    table = Table("trait", "pairs", "questions", "eval", "description")
    for name in builtin_traits():
        trait = load_trait(name)
        table.add_row(name, str(len(trait.instructions)), str(len(trait.questions)), str(len(trait.eval_questions)), trait.description)
    out.print(table)


@traits_app.command("show")
def traits_show(name: str = typer.Argument(..., help="built-in trait name or a trait file path")) -> None:
    """Print a trait as JSON (built-in name or file path)."""
    from .traits import load_trait  # noqa: PLC0415

    print(load_trait(name).model_dump_json(indent=2))


@app.command()
def extract(
    trait: str = typer.Option(..., "--trait", "-t", help="built-in trait name or trait file"),
    model: str = ModelOpt,
    method: str = typer.Option("mean_diff", help="mean_diff, pca_diff, pca_centered or logistic"),
    positions: str = typer.Option("response_avg", help="response_avg, prompt_avg, prompt_last or last"),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="vector file (.safetensors); default vectors/<model>/<trait>.safetensors"),
    max_new_tokens: int = typer.Option(48, help="answer length per contrastive sample"),
    n_questions: Optional[int] = typer.Option(None, help="use only the first N extraction questions"),
    samples: int = typer.Option(1, help="answers per (instruction, question)"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(16),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt,
) -> None:
    """Extract a persona vector: contrastive answers -> activations of all layers -> a direction per layer."""
    from .extraction import ExtractionSettings, save_pairs  # noqa: PLC0415
    from .extraction import extract as run_extract  # noqa: PLC0415
    from .traits import load_trait  # noqa: PLC0415

    loaded_trait = load_trait(trait)
    backbone = _load(model, device, dtype, device_map)
    settings = ExtractionSettings(method, positions, max_new_tokens, samples, temperature, seed, batch_size, n_questions)
    vector, pairs = run_extract(backbone, loaded_trait, settings)
    path = out_path or Path("vectors") / backbone.name / f"{loaded_trait.name}.safetensors"
    vector.save(path)
    pairs_path = save_pairs(pairs, path.with_suffix(".pairs.jsonl"))
    best = sorted(range(1, vector.n_layers + 1), key=lambda l: -vector.separation[l])[:5]
    out.print(f"best separated layers (Cohen's d): " + ", ".join(f"{l} ({vector.separation[l]:.2f})" for l in best))
    out.print(f"vector written to {path}")
    out.print(f"contrastive answers written to {pairs_path}")


@app.command()
def generate(
    prompt: List[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several)"),
    model: str = ModelOpt,
    vector: Optional[Path] = typer.Option(None, "--vector", "-v", help="persona vector file"),
    layer: List[int] = typer.Option([], "--layer", "-l", help="layer(s) to steer (l = output of block l-1)"),
    coef: float = typer.Option(1.0, "--coef", "-c", help="steering coefficient (negative suppresses)"),
    positions: str = typer.Option("all", help="all, prompt or response (generated tokens only)"),
    op: str = typer.Option("add", help="add or ablate"),
    norm_preserving: bool = typer.Option(False, help="rescale steered states to their original norm"),
    system: Optional[str] = typer.Option(None, help="system message"),
    baseline: bool = typer.Option(False, "--baseline", help="also generate unsteered, side by side"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    vector_format: Optional[str] = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt,
) -> None:
    """Generate answers, steered by a persona vector (and unsteered with --baseline)."""
    from .generation import chat_prompt, generate as run_generate  # noqa: PLC0415
    from .steering import SteeringTerm  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    backbone = _load(model, device, dtype, device_map)
    terms = []
    if vector is not None:
        if not layer:
            raise typer.BadParameter("--layer is required with --vector", param_hint="--layer")
        loaded = load_vector(vector, fmt=vector_format, backbone=backbone, layer=layer[0])  # type: ignore[arg-type]
        terms = [SteeringTerm(loaded, layer, coef, positions, op, norm_preserving)]  # type: ignore[arg-type]
    messages = [chat_prompt(p, system) for p in prompt]
    kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    steered = run_generate(backbone, messages, steering=terms, **kwargs)  # type: ignore[arg-type]
    base = run_generate(backbone, messages, **kwargs) if baseline else None  # type: ignore[arg-type]
    rows = [
        {"prompt": p, "steered": s, **({"baseline": base[i]} if base else {})} for i, (p, s) in enumerate(zip(prompt, steered))
    ]
    if as_json:
        print(json.dumps({"model": backbone.name, "vector": str(vector) if vector else None, "layers": layer, "coef": coef, "results": rows}, indent=2))
        return
    table = Table("prompt", *(["baseline"] if base else []), f"steered (coef {coef:g}, layer {','.join(map(str, layer)) or '-'})", show_lines=True)
    for row in rows:
        table.add_row(row["prompt"], *([row["baseline"]] if base else []), row["steered"])
    out.print(table)


@app.command()
def monitor(
    vector: Path = typer.Option(..., "--vector", "-v", help="persona vector file"),
    prompt: List[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several)"),
    model: str = ModelOpt,
    system: Optional[str] = typer.Option(None, help="system message"),
    response: Optional[List[str]] = typer.Option(None, "--response", "-r", help="answer to project instead of the prompt (one per --prompt)"),
    layer: List[int] = typer.Option([], "--layer", "-l", help="layers to show (default: all)"),
    positions: Optional[str] = typer.Option(None, help="default: prompt_last, or response_avg with --response"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    vector_format: Optional[str] = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Project prompts (or responses) onto a persona vector, layer by layer."""
    from .generation import chat_prompt  # noqa: PLC0415
    from .monitor import project  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    if response and len(response) != len(prompt):
        raise typer.BadParameter(f"{len(response)} responses for {len(prompt)} prompts: give one per prompt", param_hint="--response")
    backbone = _load(model, device, dtype, None)
    loaded = load_vector(vector, fmt=vector_format, backbone=backbone, layer=layer[0] if layer else None)  # type: ignore[arg-type]
    layers = layer or list(range(1, backbone.n_layers + 1))
    scores = project(backbone, loaded, [chat_prompt(p, system) for p in prompt], response, layers=layers, positions=positions)
    if as_json:
        print(json.dumps({"layers": layers, "prompts": prompt, "projections": scores.tolist()}, indent=2))
        return
    table = Table("layer", *[p[:30] for p in prompt])
    for j, l in enumerate(layers):
        table.add_row(str(l), *[f"{scores[i, j]:+.3f}" for i in range(len(prompt))])
    out.print(table)


@app.command()
def demo(
    model: str = ModelOpt,
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="where the vector and answers go"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """The main job on the embedded model: extract `pirate`, show baseline vs steered answers."""
    backbone = _load(model, device, None, None)
    result = api_demo.run_demo(backbone, out_dir)
    table = Table("question", *[f"coef {c:g}" for c in result.coefs], show_lines=True, title=f"pirate, layer {result.layer}")
    for question, answers in result.answers.items():
        table.add_row(question, *answers)
    out.print(table)
    for path in result.written:
        out.print(f"written: {path}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line and return exit code 2."""
    try:
        app(args=argv, prog_name="personactl")  # usage errors: click prints them and exits 2
    except PersonactlError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main() -> None:
    sys.exit(run())
