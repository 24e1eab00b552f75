"""Traits and persona vectors: list, show and generate traits; extract, generate with steering, monitor."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.table import Table

from ..errors import OptionError
from . import _common
from ._common import (
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    ModelOpt,
    RayActorsOpt,
    RayOpt,
    app,
    check_choice,
    err,
    out,
    parse_number,
    tensor_format,
    traits_app,
)

if TYPE_CHECKING:
    from ..extraction import ContrastivePair, ExtractionSettings
    from ..layer_selection import LayerBlend
    from ..models import Backbone
    from ..steering import Op, SteeringTerm, StepPositions
    from ..traits import AnyTrait
    from ..vectors import PersonaVector


@traits_app.command("list")
def traits_list() -> None:
    """List the built-in traits."""
    from ..traits import Trait, builtin_traits, load_trait  # noqa: PLC0415

    table = Table("trait", "pairs", "questions", "eval", "description")
    for name in builtin_traits():
        trait = load_trait(name)
        assert isinstance(trait, Trait)  # every built-in trait is a full Trait
        row = (str(len(trait.instructions)), str(len(trait.questions)), str(len(trait.eval_questions)))
        table.add_row(name, *row, trait.description)
    out.print(table)


@traits_app.command("show")
def traits_show(name: str = typer.Argument(..., help="built-in trait name or a trait file path")) -> None:
    """Print a trait as JSON (built-in name or file path)."""
    from ..traits import load_trait  # noqa: PLC0415

    print(load_trait(name).model_dump_json(indent=2))


@traits_app.command("generate")
def traits_generate(
    name: str = typer.Option(..., "--name", help="trait name (letters, digits, _ . -)"),
    description: str = typer.Option(..., "--description", "-d", help="one line saying what the trait is"),
    model: str = typer.Option(..., "--model", "-m", help="openai:MODEL (key and base URL as for the judge) or local:MODEL"),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="trait file to write; default traits/NAME.json"),
    fmt: str = typer.Option("personactl", "--format", help="personactl or persona_vectors"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out file"),
    max_attempts: int = typer.Option(3, "--max-attempts", help="requests in all, retries with the problem sent back included"),
    near_duplicate: float = typer.Option(0.9, "--near-duplicate", help="drop a question whose embedding cosine with a kept one is >= this"),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="answer length limit per request"),
    temperature: float = typer.Option(0.7),
    seed: int = typer.Option(0, help="request seed and the shuffle before the extraction / held-out split"),
) -> None:
    """Write a new trait file from a one-line description: instruction pairs, questions and a judge rubric from an LLM."""
    from ..trait_generation import generate_trait  # noqa: PLC0415

    result = generate_trait(
        name,
        description,
        model,
        out=out_path or Path("traits") / f"{name}.json",
        fmt=fmt,
        force=force,
        max_attempts=max_attempts,
        near_duplicate=near_duplicate,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )
    trait = result.trait
    out.print(f"{result.counts.line()}: {len(trait.questions)} extraction, {len(trait.eval_questions)} held out", markup=False)
    out.print(f"trait '{trait.name}' ({result.fmt} format, {result.attempts} request(s)) written to {result.path}", markup=False)


CHECK_QUESTIONS = 12  # `extract --check` default: with 6, silly read "not expressed" (docs/experiments.md, Expressibility)


@app.command()
def extract(
    trait: str = typer.Option(
        ...,
        "--trait",
        "--traits",
        "-t",
        help="built-in trait name or trait file; several comma-separated (a,b,c: one vector each, in parallel with --ray)",
    ),
    model: str = ModelOpt,
    method: str = typer.Option("mean_diff", help="mean_diff, pca_diff, pca_centered or logistic"),
    positions: str = typer.Option("response_avg", help="response_avg, prompt_avg, prompt_last or last"),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="vector file (.safetensors); default vectors/<model>/<trait>.safetensors"),
    max_new_tokens: int = typer.Option(48, help="answer length per contrastive sample"),
    n_questions: int | None = typer.Option(None, help="use only the first N extraction questions"),
    samples: int = typer.Option(1, help="answers per (instruction, question)"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(128, help="rows per generation and capture batch"),
    filter_judge: str | None = typer.Option(
        None, help="keep only pairs a judge confirms (pos trait >= 50, neg < 50, both coherent): local:MODEL or openai:MODEL"
    ),
    check_only: bool = typer.Option(
        False,
        "--check",
        help=f"only say whether the model expresses the trait (judge AUROC of its positive vs negative answers), "
        f"on the first {CHECK_QUESTIONS} questions unless --n-questions is given; writes nothing",
    ),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    device_map: str | None = DeviceMapOpt,
    ray: str | None = RayOpt,
    ray_actors: int = RayActorsOpt,
) -> None:
    """Extract a persona vector: contrastive answers -> activations of all layers -> a direction per layer.

    Prints whether the model expresses the trait at all (strongly, weakly, not: thresholds in personactl/expressibility.py);
    --check stops there, so a trait file can be tried in seconds before a long run."""
    from ..activations import POSITIONS  # noqa: PLC0415
    from ..aggregators import METHODS  # noqa: PLC0415
    from ..extraction import ExtractionSettings  # noqa: PLC0415
    from ..extraction import extract as run_extract  # noqa: PLC0415
    from ..judges import make_judges  # noqa: PLC0415
    from ..traits import load_trait  # noqa: PLC0415

    check_choice(method, METHODS, "--method")
    check_choice(positions, POSITIONS, "--positions")
    names = [t.strip() for t in trait.split(",") if t.strip()]
    if len(names) > 1 or ray is not None:
        if check_only or filter_judge:
            raise OptionError("--check and --filter-judge take one trait, without --ray")
        if out_path is not None and out_path.suffix == ".safetensors":
            raise OptionError(f"--out {out_path}: with several traits or --ray give a folder (one NAME.safetensors per trait)")
        settings = ExtractionSettings(method, positions, max_new_tokens, samples, temperature, seed, batch_size, n_questions)
        _extract_many([load_trait(n) for n in names], settings, model, out_path, ray, ray_actors, device, dtype, device_map)
        return
    loaded_trait = load_trait(trait)
    judges = make_judges(filter_judge, loaded_trait) if filter_judge else None
    backbone = _common._load(model, device, dtype, device_map)
    if check_only:
        from ..extraction import check  # noqa: PLC0415

        settings = ExtractionSettings(method, positions, max_new_tokens, samples, temperature, seed, batch_size, n_questions or CHECK_QUESTIONS)
        verdict, _, pairs = check(backbone, loaded_trait, settings, judges)
        out.print(f"expressibility: {verdict.line()}", markup=False)
        out.print(f"({len(pairs)} contrastive pairs; nothing written)")
        return
    settings = ExtractionSettings(method, positions, max_new_tokens, samples, temperature, seed, batch_size, n_questions)
    vector, pairs = run_extract(backbone, loaded_trait, settings, judges)
    if "expressibility" in vector.extra:
        out.print(f"expressibility: {vector.extra['expressibility']['line']}", markup=False)
    if "filter" in vector.extra:
        out.print(f"pairs kept by {vector.extra['filter']['judge']}: {vector.extra['filter']['kept']}")
    _save_vector(vector, pairs, out_path or Path("vectors") / backbone.name / f"{loaded_trait.name}.safetensors")


def _save_vector(vector: PersonaVector, pairs: list[ContrastivePair], path: Path) -> None:
    from ..extraction import save_pairs  # noqa: PLC0415

    vector.save(path)
    pairs_path = save_pairs(pairs, path.with_suffix(".pairs.jsonl"))
    best = sorted(range(1, vector.n_layers + 1), key=lambda l: -vector.separation[l])[:5]
    out.print("best separated layers (Cohen's d): " + ", ".join(f"{l} ({vector.separation[l]:.2f})" for l in best))
    out.print(f"vector written to {path}")
    out.print(f"contrastive answers written to {pairs_path}")


def _extract_many(
    traits: list[AnyTrait],
    settings: ExtractionSettings,
    model: str,
    folder: Path | None,
    ray: str | None,
    actors: int,
    device: str | None,
    dtype: str | None,
    device_map: str | None,
) -> None:
    """One vector per trait: in turn on one model, or in parallel on Ray actors (one model each)."""
    from ..extraction import extract as run_extract  # noqa: PLC0415

    if ray is None:
        backbone = _common._load(model, device, dtype, device_map)
        for trait in traits:
            _save_trait(folder, trait, *run_extract(backbone, trait, settings))
        return
    from ..scaleout import Ending, run_on_ray  # noqa: PLC0415

    run_on_ray(
        ray,
        partial(_extract_on_ray, traits, settings, model, folder, ray, actors, device),
        Ending(lambda: "the vectors of the traits listed above are written", "re-run the command with --traits set to the others"),
    )


def _extract_on_ray(
    traits: list[AnyTrait], settings: ExtractionSettings, model: str, folder: Path | None, ray: str, actors: int, device: str | None
) -> None:
    """The traits on Ray actors; against a cluster it runs in the driver process of personactl.scaleout.driver."""
    from ..scaleout import PoolSettings, extract_traits, ray_pool  # noqa: PLC0415

    with ray_pool(ray, PoolSettings(model, min(actors, len(traits)), device=device)) as pool:
        out.print(f"Ray ({ray}): {len(pool.actors)} workers, {pool.threads} thread(s) each; {len(traits)} traits")
        for trait, vector, pairs in extract_traits(pool, traits, settings):
            _save_trait(folder, trait, vector, pairs)


def _save_trait(folder: Path | None, trait: AnyTrait, vector: PersonaVector, pairs: list[ContrastivePair]) -> None:
    """Say what the trait's extraction found and write its vector and answers (FOLDER/NAME.safetensors)."""
    out.print(f"{trait.name}: " + vector.extra.get("expressibility", {}).get("line", "extracted"), markup=False)
    _save_vector(vector, pairs, (folder or Path("vectors") / vector.model) / f"{trait.name}.safetensors")


@app.command()
def generate(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several)"),
    model: str = ModelOpt,
    vector: Path | None = typer.Option(None, "--vector", "-v", help="persona vector file"),
    layer: list[str] = typer.Option(
        [],
        "--layer",
        "-l",
        help="layer(s) to steer (l = output of block l-1), or auto / auto:K: the best / top K "
        "measured layers, weights from the layers.json beside --vector (`personactl layers`)",
    ),
    coef: float = typer.Option(1.0, "--coef", "-c", help="steering coefficient (negative suppresses)"),
    positions: str = typer.Option(
        "all", help="all (every token), response (the last prompt token and every new one, as persona_vectors steers) or prompt (the rest)"
    ),
    op: str = typer.Option("add", help="add (h + coef*v), ablate (remove coef times the projection on v) or cap (clamp the projection to --cap-at)"),
    cap_at: str | None = typer.Option(
        None,
        "--cap-at",
        help="with --op cap: HIGH or LOW:HIGH of the projection, numbers or statistics of the extraction's answers "
        "(neg-p90, the default: 90th percentile of the non-trait answers; pos-p10:; min, max, mean); --coef is the cap's strength (1 = full)",
    ),
    norm_preserving: bool = typer.Option(False, help="rescale steered states to their original norm"),
    system: str | None = typer.Option(None, help="system message"),
    baseline: bool = typer.Option(False, "--baseline", help="also generate unsteered, side by side"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    condition: Path | None = typer.Option(None, "--condition", help="condition vector (from `condition find`): steer only prompts that fire it"),
    condition_layer: int | None = typer.Option(None, "--condition-layer", help="layer the condition reads [default: the file's]"),
    threshold: str | None = typer.Option(None, "--threshold", help="the condition fires above (--comparison less: below) it [default: the file's]"),
    comparison: str | None = typer.Option(None, "--comparison", help="greater or less [default: the file's, else greater]"),
    vector_format: str | None = FormatOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
    device_map: str | None = DeviceMapOpt,
    backend: str = typer.Option(
        "hf",
        "--backend",
        help="hf (local model, activation steering); llamacpp (the GGUF model under llama.cpp: "
        "the vector as a control vector, --lora as a GGUF LoRA); or openai:MODEL: an OpenAI-compatible "
        "endpoint (PERSONACTL_API_BASE_URL / PERSONACTL_API_KEY), steered by parameter modulation",
    ),
    lora: str | None = typer.Option(
        None, "--lora", help="persona LoRA: a LoRA direction / adapter folder, a registry name, or (llamacpp) a LoRA .gguf"
    ),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="LoRA strength: W + scale * dW"),
) -> None:
    """Generate answers, steered by a persona vector (and unsteered with --baseline); --condition steers only the
    prompts whose projection on the condition vector passes the threshold."""
    from ..backends import parse_backend  # noqa: PLC0415
    from ..capping import DEFAULT_CAP, cap_term, parse_cap_at  # noqa: PLC0415
    from ..steering import OPS  # noqa: PLC0415

    check_choice(op, OPS, "--op")
    cap_at = cap_at or DEFAULT_CAP
    if op == "cap":
        parse_cap_at(cap_at)
    kind = parse_backend(backend)[0]
    if kind == "openai":
        if op != "add":
            raise OptionError(f"--op {op} needs --backend hf (an API is steered by parameter modulation, which only adds)")
        _generate_via_api(
            backend,
            prompt,
            vector,
            layer,
            coef,
            system,
            temperature,
            max_new_tokens,
            seed,
            as_json,
            lambda: _common._load(model, device, dtype, device_map),
        )
        return
    if kind == "llamacpp":
        unsupported = [
            name
            for name, used in ((f"--op {op}", op != "add"), ("--norm-preserving", norm_preserving), ("--condition", condition is not None))
            if used
        ]
        if unsupported:
            raise OptionError(f"{', '.join(unsupported)} needs --backend hf (llama.cpp adds control vectors only)")
        _generate_via_llamacpp(
            model,
            prompt,
            vector,
            vector_format,
            layer,
            coef,
            positions,
            system,
            baseline,
            as_json,
            max_new_tokens,
            temperature,
            seed,
            lora,
            lora_scale,
        )
        return
    from ..conditions import condition_from_vector  # noqa: PLC0415
    from ..generation import chat_prompt  # noqa: PLC0415
    from ..generation import generate as run_generate
    from ..steering import SteeringTerm, weighted_terms  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    threshold_value = parse_number(threshold, "--threshold") if threshold is not None else None
    if comparison is not None:
        check_choice(comparison, ("greater", "less"), "--comparison")
    fmt = tensor_format(vector_format)
    backbone = _common._load(model, device, dtype, device_map)
    cond = None
    if condition is not None:
        cond_vector = load_vector(condition, fmt=fmt, backbone=backbone, layer=condition_layer)
        cond = condition_from_vector(cond_vector, condition_layer, threshold_value, comparison)
    fired: list = []
    terms: list[SteeringTerm] = []
    layers: list[int] = []
    if vector is not None:
        if not layer:
            raise typer.BadParameter("--layer is required with --vector", param_hint="--layer")
        blend, layers = _steered_layers(layer, vector, backbone.n_layers)
        if blend and op == "cap":
            raise OptionError("--op cap takes a band of layers (--layer 4,5,6 or 4-6), not an auto blend")
        loaded = load_vector(vector, fmt=fmt, backbone=backbone, layer=layers[0])
        where, how = cast("StepPositions", positions), cast("Op", op)  # op checked above, positions by steer()
        if how == "cap":
            terms = [cap_term(loaded, layers, cap_at, coef, where)]
        elif blend:
            terms = weighted_terms(loaded, blend.weights, coef, where, how, norm_preserving)
        else:
            terms = [SteeringTerm(loaded, layers, coef, where, how, norm_preserving)]
        if blend and not as_json:
            out.print(f"layers {blend.describe()}")
    messages = [chat_prompt(p, system) for p in prompt]
    answer = partial(run_generate, backbone, messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    with _merged_lora(backbone, lora, lora_scale):
        steered = answer(steering=terms, condition=cond, on_condition=lambda f, s: fired.extend(zip(f.tolist(), s.tolist())))
    base = answer() if baseline else None
    rows = [
        {
            "prompt": p,
            "steered": s,
            **({"baseline": base[i]} if base else {}),
            **({"condition_fired": fired[i][0], "condition_score": fired[i][1]} if cond else {}),
        }
        for i, (p, s) in enumerate(zip(prompt, steered))
    ]
    if as_json:
        extra = (
            {"condition": {"vector": str(condition), "layer": cond.layer, "threshold": cond.threshold, "comparison": cond.comparison}} if cond else {}
        )
        print(
            json.dumps(
                {
                    "model": backbone.name,
                    "vector": str(vector) if vector else None,
                    "layers": layers,
                    "coef": coef,
                    **extra,
                    **({"weights": {str(k): w for k, w in blend.weights.items()}} if vector is not None and blend else {}),
                    "results": rows,
                },
                indent=2,
            )
        )
        return
    if cond:
        out.print(f"condition: layer {cond.layer}, fires when the score is {cond.comparison} than {cond.threshold:.4g}")
    cond_col = ["condition"] if cond else []
    table = Table(
        "prompt", *cond_col, *(["baseline"] if base else []), f"steered (coef {coef:g}, layer {','.join(map(str, layer)) or '-'})", show_lines=True
    )
    for row in rows:
        said = [f"{'fired' if row['condition_fired'] else 'not fired'} ({row['condition_score']:+.3f})"] if cond else []
        table.add_row(row["prompt"], *said, *([row["baseline"]] if base else []), row["steered"])
    out.print(table)


def _merged_lora(backbone: Backbone, lora: str | None, scale: float) -> AbstractContextManager[None]:
    """`--lora` on the hf backend: coef * dW merged for the steered answers (restored afterwards)."""
    import contextlib  # noqa: PLC0415

    if not lora:
        return contextlib.nullcontext()
    from ..lora import LoRADirection, merged, resolve_adapter  # noqa: PLC0415

    direction = LoRADirection.load(resolve_adapter(lora))
    direction.check_base(backbone)
    return merged(backbone, (direction, scale))


def _generate_via_llamacpp(
    model: str,
    prompt: list[str],
    vector: Path | None,
    vector_format: str | None,
    layer: list[str],
    coef: float,
    positions: str,
    system: str | None,
    baseline: bool,
    as_json: bool,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    lora: str | None,
    lora_scale: float,
) -> None:
    """`generate --backend llamacpp`: the GGUF model under llama.cpp, the vector as a control vector (blackbox/llamacpp.py)."""
    from ..blackbox import Control, LlamaCppBackend, context_size, generate_answers  # noqa: PLC0415
    from ..generation import chat_prompt  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    check_choice(positions, ("all", "response", "prompt"), "--positions")
    fmt = tensor_format(vector_format)
    with err.status(f"loading {model} (llama.cpp) ..."):
        backend = LlamaCppBackend(model, n_ctx=context_size(max_new_tokens), seed=seed)
    control: Control | None = None
    layers: list[int] = []
    blend: LayerBlend | None = None
    if vector is not None:
        if not layer:
            raise typer.BadParameter("--layer is required with --vector", param_hint="--layer")
        blend, layers = _steered_layers(layer, vector, backend.n_layers)
        loaded = load_vector(vector, fmt=fmt, layer=layers[0])
        control = Control(loaded, dict(blend.weights) if blend else {int(x): 1.0 for x in layers}, coef, positions)
    messages = [chat_prompt(p, system) for p in prompt]
    try:
        steered, base = generate_answers(
            backend,
            messages,
            control=control,
            lora=lora,
            lora_scale=lora_scale,
            baseline=baseline,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
        )
    finally:
        backend.close()
    rows = [{"prompt": p, "steered": s, **({"baseline": base[i]} if base else {})} for i, (p, s) in enumerate(zip(prompt, steered))]
    if as_json:
        print(
            json.dumps(
                {
                    "backend": "llamacpp",
                    "model": backend.name,
                    "gguf": str(backend.path),
                    "vector": str(vector) if vector else None,
                    "layers": layers,
                    "coef": coef,
                    "lora": lora,
                    "lora_scale": lora_scale if lora else None,
                    **({"weights": {str(k): w for k, w in blend.weights.items()}} if blend else {}),
                    "results": rows,
                },
                indent=2,
            )
        )
        return
    table = Table(
        "prompt", *(["baseline"] if base else []), f"steered (llama.cpp, coef {coef:g}, layer {','.join(map(str, layers)) or '-'})", show_lines=True
    )
    for row in rows:
        table.add_row(row["prompt"], *([row["baseline"]] if base else []), row["steered"])
    out.print(table)


def _generate_via_api(
    backend: str,
    prompt: list[str],
    vector: Path | None,
    layer: list[str],
    coef: float,
    system: str | None,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    as_json: bool,
    load_local: Callable[[], Backbone],
) -> None:
    """`generate --backend openai:MODEL`: parameter modulation (blackbox/modulation.py); prints the parameters it used."""
    from ..blackbox import ApiGenerator, Sampling, generate_modulated  # noqa: PLC0415
    from ..generation import chat_prompt  # noqa: PLC0415

    if vector is None:
        sampling = Sampling(temperature, max_tokens=max_new_tokens)
        answers, info = (
            ApiGenerator.from_backend(backend).chat([chat_prompt(p, system) for p in prompt], sampling, [seed + i for i in range(len(prompt))]),
            {},
        )
    else:
        if len(layer) != 1 or not layer[0].strip().isdigit():
            raise typer.BadParameter("parameter modulation reads the vector at one layer: give one --layer number", param_hint="--layer")
        done = generate_modulated(
            backend,
            prompt,
            str(vector),
            int(layer[0]),
            coef,
            load_local=load_local,
            base_temperature=temperature,
            max_tokens=max_new_tokens,
            seed=seed,
            system=system,
        )
        answers, sampling = done.answers, done.sampling
        info = {"magnitude": round(done.magnitude, 4), "hidden_norm": round(done.hidden_norm, 3), "coef": coef, "layer": int(layer[0])}
    if as_json:
        print(
            json.dumps(
                {
                    "backend": backend,
                    "parameters": sampling.to_dict(),
                    **info,
                    "results": [{"prompt": p, "answer": a} for p, a in zip(prompt, answers)],
                },
                indent=2,
            )
        )
        return
    out.print(
        f"{backend}: {sampling.describe()}"
        + (f" (|v| = {info['magnitude']:.3g} x 10% of the mean hidden-state norm at layer {info['layer']}, coef {coef:g})" if info else "")
    )
    table = Table("prompt", "answer", show_lines=True)
    for p, a in zip(prompt, answers):
        table.add_row(p, a)
    out.print(table)


@app.command()
def monitor(
    vector: Path = typer.Option(..., "--vector", "-v", help="persona vector file"),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several)"),
    model: str = ModelOpt,
    system: str | None = typer.Option(None, help="system message"),
    response: list[str] | None = typer.Option(None, "--response", "-r", help="answer to project instead of the prompt (one per --prompt)"),
    layer: list[str] = typer.Option([], "--layer", "-l", help="layers to show: 9,10,11 or 18-28 (default: all)"),
    positions: str | None = typer.Option(None, help="default: prompt_last, or response_avg with --response or --generate"),
    generate_tokens: int | None = typer.Option(
        None,
        "--generate",
        min=1,
        help="answer each prompt (greedy, up to N tokens) and project the answers, read while they are generated (one pass)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    vector_format: str | None = FormatOpt,
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Project prompts (or responses, or the model's own answers with --generate) onto a persona vector, layer by layer."""
    from ..generation import chat_prompt  # noqa: PLC0415
    from ..layer_list import layer_numbers  # noqa: PLC0415
    from ..monitor import check_request, project, project_generated  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    if generate_tokens is not None and (response or positions not in (None, "response_avg")):
        raise OptionError("--generate projects the generated answers (response_avg): drop --response and --positions")
    positions = check_request(len(prompt), response or None, positions)
    chosen = layer_numbers(layer, "--layer") if layer else None
    fmt = tensor_format(vector_format)
    backbone = _common._load(model, device, dtype, None)
    loaded = load_vector(vector, fmt=fmt, backbone=backbone, layer=chosen[0] if chosen else None)
    layers = chosen or list(range(1, backbone.n_layers + 1))
    messages = [chat_prompt(p, system) for p in prompt]
    answers = None
    if generate_tokens is not None:
        answers, scores = project_generated(backbone, loaded, messages, layers=layers, max_new_tokens=generate_tokens)
    else:
        scores = project(backbone, loaded, messages, response or None, layers=layers, positions=positions)
    if as_json:
        print(
            json.dumps(
                {"layers": layers, "prompts": prompt, **({"answers": answers} if answers else {}), "projections": _finite(scores.tolist())}, indent=2
            )
        )
        return
    for p, a in zip(prompt, answers or []):
        out.print(f"{p[:30]}: {a}", markup=False)
    table = Table("layer", *[p[:30] for p in prompt])
    for j, l in enumerate(layers):
        table.add_row(str(l), *[f"{scores[i, j]:+.3f}" for i in range(len(prompt))])
    out.print(table)


def _finite(rows: list[list[float]]) -> list[list[float | None]]:
    """NaN (an empty answer's projection) as null: JSON has no NaN."""
    return [[None if x != x else x for x in row] for row in rows]


def _steered_layers(values: list[str], vector: Path, n_layers: int) -> tuple[LayerBlend | None, list[int]]:
    """`--layer` values as (blend, layers): `auto` / `auto:K` alone -> the LayerBlend measured in the layers.json
    beside the vector and its layers; numbers and ranges (9,10,11 or 9-11, the syntax of every layer list) -> (None, them)."""
    from ..layer_list import parse_layers  # noqa: PLC0415
    from ..layer_selection import blend_for_vector  # noqa: PLC0415

    specs = parse_layers(values, words=("auto", "auto:"), option="--layer")
    words = [spec for spec in specs if isinstance(spec, str)]
    if not words:
        return None, [int(spec) for spec in specs]
    if len(specs) > 1:
        raise OptionError(f"--layer {words[0]} chooses its layers itself: give it alone, without other --layer values")
    blend = blend_for_vector(vector, words[0], n_layers)
    return blend, list(blend.weights)
