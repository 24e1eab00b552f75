"""The `personactl` command line: parse, call the API, print. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import OptionError, PersonactlError

app = typer.Typer(
    help="Find, measure, steer and move the character traits (personas) of language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
traits_app = typer.Typer(help="List and show trait definitions.", no_args_is_help=True)
app.add_typer(traits_app, name="traits")
lora_app = typer.Typer(help="Weight-space personas: LoRA persona directions (pos - neg), SVD.", no_args_is_help=True)
app.add_typer(lora_app, name="lora")
adapter_app = typer.Typer(help="Plug-and-play persona adapters: train from JSONL, list, show, merge.", no_args_is_help=True)
app.add_typer(adapter_app, name="adapter")
transfer_app = typer.Typer(help="Cross-model transfer: carry a persona vector from one model family to another.", no_args_is_help=True)
app.add_typer(transfer_app, name="transfer")
condition_app = typer.Typer(help="Conditional steering: find a condition (direction, layer, threshold) from two sets of prompts.", no_args_is_help=True)
app.add_typer(condition_app, name="condition")
export_app = typer.Typer(help="Export personas to llama.cpp: control vectors and LoRA adapters as GGUF files.", no_args_is_help=True)
app.add_typer(export_app, name="export")
import_app = typer.Typer(help="Import persona vectors from other tools (llama.cpp / repeng control vectors).", no_args_is_help=True)
app.add_typer(import_app, name="import")

out = Console(soft_wrap=True)  # paths stay on one line
err = Console(stderr=True)

ModelOpt = typer.Option("smollm2-135m", "--model", "-m", help="alias (smollm2-135m, gemma3-270m), HF folder, .gguf file or hub id")
DeviceOpt = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: where transformers puts it)")
DtypeOpt = typer.Option(None, help="float32, float16, bfloat16 or auto")
DeviceMapOpt = typer.Option(None, "--device-map", help="'auto' spreads a big model over GPUs (accelerate)")
FormatOpt = typer.Option(None, "--format", help="vector file format: safetensors, pt or npy (default: by suffix)")


def _load(model: str, device: Optional[str], dtype: Optional[str], device_map: Optional[str], quantize: Optional[str] = None):
    import warnings  # noqa: PLC0415

    from .models import load_model  # noqa: PLC0415 - keep --help fast

    with err.status(f"loading {model} ..."), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        backbone = load_model(model, device=device, dtype=dtype, device_map=device_map, quantize=quantize)
    for warning in caught:
        if "--quantize" in str(warning.message):
            err.print(f"note: {warning.message}")
    return backbone


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


@traits_app.command("generate")
def traits_generate(
    name: str = typer.Option(..., "--name", help="trait name (letters, digits, _ . -)"),
    description: str = typer.Option(..., "--description", "-d", help="one line saying what the trait is"),
    model: str = typer.Option(..., "--model", "-m", help="openai:MODEL (key and base URL as for the judge) or local:MODEL"),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="trait file to write; default traits/NAME.json"),
    fmt: str = typer.Option("personactl", "--format", help="personactl or persona_vectors"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out file"),
    max_attempts: int = typer.Option(3, "--max-attempts", help="requests in all, retries with the problem sent back included"),
    near_duplicate: float = typer.Option(0.9, "--near-duplicate", help="drop a question whose embedding cosine with a kept one is >= this"),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="answer length limit per request"),
    temperature: float = typer.Option(0.7),
    seed: int = typer.Option(0, help="request seed and the shuffle before the extraction / held-out split"),
) -> None:
    """Write a new trait file from a one-line description: instruction pairs, questions and a judge rubric from an LLM."""
    from .trait_generation import generate_trait  # noqa: PLC0415

    result = generate_trait(
        name, description, model, out=out_path or Path("traits") / f"{name}.json", fmt=fmt, force=force,
        max_attempts=max_attempts, near_duplicate=near_duplicate, max_tokens=max_tokens, temperature=temperature, seed=seed,
    )
    trait = result.trait
    out.print(f"{result.counts.line()}: {len(trait.questions)} extraction, {len(trait.eval_questions)} held out", markup=False)
    out.print(f"trait '{trait.name}' ({result.fmt} format, {result.attempts} request(s)) written to {result.path}", markup=False)


RayOpt = typer.Option(None, "--ray", help="spread the work over Ray actors: local (a Ray started here, stopped after), auto (the "
                      "running cluster) or HOST:PORT / ray://HOST:PORT; needs pip install 'personactl[ray]'")
RayActorsOpt = typer.Option(2, "--ray-actors", help="Ray actors (one model each; on a GPU cluster one GPU each)")

CHECK_QUESTIONS = 6  # `extract --check` default: a quick verdict (docs/experiments.md shows it agrees with 12)


@app.command()
def extract(
    trait: str = typer.Option(..., "--trait", "--traits", "-t", help="built-in trait name or trait file; several comma-separated "
                              "(a,b,c: one vector each, in parallel with --ray)"),
    model: str = ModelOpt,
    method: str = typer.Option("mean_diff", help="mean_diff, pca_diff, pca_centered or logistic"),
    positions: str = typer.Option("response_avg", help="response_avg, prompt_avg, prompt_last or last"),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="vector file (.safetensors); default vectors/<model>/<trait>.safetensors"),
    max_new_tokens: int = typer.Option(48, help="answer length per contrastive sample"),
    n_questions: Optional[int] = typer.Option(None, help="use only the first N extraction questions"),
    samples: int = typer.Option(1, help="answers per (instruction, question)"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(128, help="rows per generation and capture batch"),
    filter_judge: Optional[str] = typer.Option(
        None, help="keep only pairs a judge confirms (pos trait >= 50, neg < 50, both coherent): local:MODEL or openai:MODEL"
    ),
    check_only: bool = typer.Option(
        False, "--check", help=f"only say whether the model expresses the trait (judge AUROC of its positive vs negative answers), "
        f"on the first {CHECK_QUESTIONS} questions unless --n-questions is given; writes nothing",
    ),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt,
    ray: Optional[str] = RayOpt,
    ray_actors: int = RayActorsOpt,
) -> None:
    """Extract a persona vector: contrastive answers -> activations of all layers -> a direction per layer.

    Prints whether the model expresses the trait at all (strongly, weakly, not: thresholds in personactl/expressibility.py);
    --check stops there, so a trait file can be tried in seconds before a long run."""
    from .activations import POSITIONS  # noqa: PLC0415
    from .aggregators import METHODS  # noqa: PLC0415
    from .extraction import ExtractionSettings  # noqa: PLC0415
    from .extraction import extract as run_extract  # noqa: PLC0415
    from .traits import load_trait  # noqa: PLC0415

    from .judges.factory import make_judges  # noqa: PLC0415

    _check_choice(method, METHODS, "--method")
    _check_choice(positions, POSITIONS, "--positions")
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
    backbone = _load(model, device, dtype, device_map)
    if check_only:
        from .extraction import check  # noqa: PLC0415

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


def _save_vector(vector, pairs, path: Path) -> None:
    from .extraction import save_pairs  # noqa: PLC0415

    vector.save(path)
    pairs_path = save_pairs(pairs, path.with_suffix(".pairs.jsonl"))
    best = sorted(range(1, vector.n_layers + 1), key=lambda l: -vector.separation[l])[:5]
    out.print("best separated layers (Cohen's d): " + ", ".join(f"{l} ({vector.separation[l]:.2f})" for l in best))
    out.print(f"vector written to {path}")
    out.print(f"contrastive answers written to {pairs_path}")


def _extract_many(traits, settings, model: str, folder: Optional[Path], ray: Optional[str], actors: int, device, dtype, device_map) -> None:
    """One vector per trait: in turn on one model, or in parallel on Ray actors (one model each)."""
    from .extraction import extract as run_extract  # noqa: PLC0415

    def save(trait, vector, pairs) -> None:
        out.print(f"{trait.name}: " + vector.extra.get("expressibility", {}).get("line", "extracted"), markup=False)
        _save_vector(vector, pairs, (folder or Path("vectors") / vector.model) / f"{trait.name}.safetensors")

    if ray is None:
        backbone = _load(model, device, dtype, device_map)
        for trait in traits:
            save(trait, *run_extract(backbone, trait, settings))
        return
    from .scaleout import PoolSettings, extract_traits, parse_address, ray_pool  # noqa: PLC0415

    parse_address(ray)
    with ray_pool(ray, PoolSettings(model, min(actors, len(traits)), device=device)) as pool:
        out.print(f"Ray ({ray}): {len(pool.actors)} workers, {pool.threads} thread(s) each; {len(traits)} traits")
        for trait, vector, pairs in extract_traits(pool, traits, settings):
            save(trait, vector, pairs)


@app.command()
def generate(
    prompt: List[str] = typer.Option(..., "--prompt", "-p", help="user message (repeat for several)"),
    model: str = ModelOpt,
    vector: Optional[Path] = typer.Option(None, "--vector", "-v", help="persona vector file"),
    layer: List[str] = typer.Option([], "--layer", "-l", help="layer(s) to steer (l = output of block l-1), or auto / auto:K: the best / top K "
                                    "measured layers, weights from the layers.json beside --vector (`personactl layers`)"),
    coef: float = typer.Option(1.0, "--coef", "-c", help="steering coefficient (negative suppresses)"),
    positions: str = typer.Option("all", help="all (every token), response (the last prompt token and every new one, as "
                                  "persona_vectors steers) or prompt (the rest)"),
    op: str = typer.Option("add", help="add or ablate"),
    norm_preserving: bool = typer.Option(False, help="rescale steered states to their original norm"),
    system: Optional[str] = typer.Option(None, help="system message"),
    baseline: bool = typer.Option(False, "--baseline", help="also generate unsteered, side by side"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    condition: Optional[Path] = typer.Option(None, "--condition", help="condition vector (from `condition find`): steer only prompts that fire it"),
    condition_layer: Optional[int] = typer.Option(None, "--condition-layer", help="layer the condition reads [default: the file's]"),
    threshold: Optional[str] = typer.Option(None, "--threshold", help="the condition fires above (--comparison less: below) it [default: the file's]"),
    comparison: Optional[str] = typer.Option(None, "--comparison", help="greater or less [default: the file's, else greater]"),
    vector_format: Optional[str] = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt,
    backend: str = typer.Option("hf", "--backend", help="hf (local model, activation steering); llamacpp (the GGUF model under llama.cpp: "
                                "the vector as a control vector, --lora as a GGUF LoRA); or openai:MODEL: an OpenAI-compatible "
                                "endpoint (PERSONACTL_API_BASE_URL / PERSONACTL_API_KEY), steered by parameter modulation"),
    lora: Optional[str] = typer.Option(None, "--lora", help="persona LoRA: a LoRA direction / adapter folder, a registry name, or (llamacpp) a LoRA .gguf"),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="LoRA strength: W + scale * dW"),
) -> None:
    """Generate answers, steered by a persona vector (and unsteered with --baseline); --condition steers only the
    prompts whose projection on the condition vector passes the threshold."""
    from .blackbox.api import parse_backend  # noqa: PLC0415

    kind = parse_backend(backend)[0]
    if kind == "openai":
        _generate_via_api(backend, prompt, vector, layer, coef, system, temperature, max_new_tokens, seed, as_json,
                          lambda: _load(model, device, dtype, device_map))
        return
    if kind == "llamacpp":
        unsupported = [name for name, used in (("--op ablate", op != "add"), ("--norm-preserving", norm_preserving),
                                               ("--condition", condition is not None)) if used]
        if unsupported:

            raise OptionError(f"{', '.join(unsupported)} needs --backend hf (llama.cpp adds control vectors only)")
        _generate_via_llamacpp(model, prompt, vector, vector_format, layer, coef, positions, system, baseline, as_json,
                               max_new_tokens, temperature, seed, lora, lora_scale)
        return
    from .conditions import condition_from_vector  # noqa: PLC0415
    from .generation import chat_prompt, generate as run_generate  # noqa: PLC0415
    from .steering import SteeringTerm, weighted_terms  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    threshold_value = _number(threshold, "--threshold") if threshold is not None else None
    if comparison is not None:
        _check_choice(comparison, ("greater", "less"), "--comparison")
    backbone = _load(model, device, dtype, device_map)
    cond = None
    if condition is not None:
        cond_vector = load_vector(condition, fmt=vector_format, backbone=backbone, layer=condition_layer)  # type: ignore[arg-type]
        cond = condition_from_vector(cond_vector, condition_layer, threshold_value, comparison)
    fired: list = []
    terms = []
    if vector is not None:
        if not layer:
            raise typer.BadParameter("--layer is required with --vector", param_hint="--layer")
        blend = _blend_option(layer, vector, backbone.n_layers)
        layer = list(blend.weights) if blend else _numbers(",".join(layer), int)  # type: ignore[assignment]
        loaded = load_vector(vector, fmt=vector_format, backbone=backbone, layer=layer[0])  # type: ignore[arg-type]
        terms = (weighted_terms(loaded, blend.weights, coef, positions, op, norm_preserving) if blend  # type: ignore[arg-type]
                 else [SteeringTerm(loaded, layer, coef, positions, op, norm_preserving)])  # type: ignore[arg-type]
        if blend and not as_json:
            out.print(f"layers {blend.describe()}")
    messages = [chat_prompt(p, system) for p in prompt]
    kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    with _merged_lora(backbone, lora, lora_scale):
        steered = run_generate(backbone, messages, steering=terms, condition=cond,  # type: ignore[arg-type]
                               on_condition=lambda f, s: fired.extend(zip(f.tolist(), s.tolist())), **kwargs)
    base = run_generate(backbone, messages, **kwargs) if baseline else None  # type: ignore[arg-type]
    rows = [
        {"prompt": p, "steered": s, **({"baseline": base[i]} if base else {}),
         **({"condition_fired": fired[i][0], "condition_score": fired[i][1]} if cond else {})}
        for i, (p, s) in enumerate(zip(prompt, steered))
    ]
    if as_json:
        extra = {"condition": {"vector": str(condition), "layer": cond.layer, "threshold": cond.threshold, "comparison": cond.comparison}} if cond else {}
        print(json.dumps({"model": backbone.name, "vector": str(vector) if vector else None, "layers": layer, "coef": coef, **extra,
                          **({"weights": {str(k): w for k, w in blend.weights.items()}} if vector is not None and blend else {}),
                          "results": rows}, indent=2))
        return
    if cond:
        out.print(f"condition: layer {cond.layer}, fires when the score is {cond.comparison} than {cond.threshold:.4g}")
    cond_col = ["condition"] if cond else []
    table = Table("prompt", *cond_col, *(["baseline"] if base else []), f"steered (coef {coef:g}, layer {','.join(map(str, layer)) or '-'})", show_lines=True)
    for row in rows:
        said = [f"{'fired' if row['condition_fired'] else 'not fired'} ({row['condition_score']:+.3f})"] if cond else []
        table.add_row(row["prompt"], *said, *([row["baseline"]] if base else []), row["steered"])
    out.print(table)


def _merged_lora(backbone, lora: Optional[str], scale: float):
    """`--lora` on the hf backend: coef * dW merged for the steered answers (restored afterwards)."""
    import contextlib  # noqa: PLC0415

    if not lora:
        return contextlib.nullcontext()
    from .lora.adapters import resolve_adapter  # noqa: PLC0415
    from .lora.direction import LoRADirection, merged  # noqa: PLC0415

    direction = LoRADirection.load(resolve_adapter(lora))
    direction.check_base(backbone)
    return merged(backbone, (direction, scale))


def _generate_via_llamacpp(model, prompt, vector, vector_format, layer, coef, positions, system, baseline, as_json,
                           max_new_tokens, temperature, seed, lora, lora_scale) -> None:
    """`generate --backend llamacpp`: the GGUF model under llama.cpp, the vector as a control vector (blackbox/llamacpp.py)."""
    from .blackbox.llamacpp import Control, LlamaCppBackend, context_size, generate_answers  # noqa: PLC0415
    from .generation import chat_prompt  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    _check_choice(positions, ("all", "response", "prompt"), "--positions")
    with err.status(f"loading {model} (llama.cpp) ..."):
        backend = LlamaCppBackend(model, n_ctx=context_size(max_new_tokens), seed=seed)
    control, layers, blend = None, [], None
    if vector is not None:
        if not layer:
            raise typer.BadParameter("--layer is required with --vector", param_hint="--layer")
        blend = _blend_option(layer, vector, backend.n_layers)
        layers = list(blend.weights) if blend else _numbers(",".join(layer), int)
        loaded = load_vector(vector, fmt=vector_format, layer=layers[0])  # type: ignore[arg-type]
        control = Control(loaded, dict(blend.weights) if blend else {int(x): 1.0 for x in layers}, coef, positions)
    messages = [chat_prompt(p, system) for p in prompt]
    try:
        steered, base = generate_answers(backend, messages, control=control, lora=lora, lora_scale=lora_scale, baseline=baseline,
                                         max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    finally:
        backend.close()
    rows = [{"prompt": p, "steered": s, **({"baseline": base[i]} if base else {})} for i, (p, s) in enumerate(zip(prompt, steered))]
    if as_json:
        print(json.dumps({"backend": "llamacpp", "model": backend.name, "gguf": str(backend.path), "vector": str(vector) if vector else None,
                          "layers": layers, "coef": coef, "lora": lora, "lora_scale": lora_scale if lora else None,
                          **({"weights": {str(k): w for k, w in blend.weights.items()}} if blend else {}), "results": rows}, indent=2))
        return
    table = Table("prompt", *(["baseline"] if base else []), f"steered (llama.cpp, coef {coef:g}, layer {','.join(map(str, layers)) or '-'})",
                  show_lines=True)
    for row in rows:
        table.add_row(row["prompt"], *([row["baseline"]] if base else []), row["steered"])
    out.print(table)


def _generate_via_api(backend, prompt, vector, layer, coef, system, temperature, max_new_tokens, seed, as_json, load_local) -> None:
    """`generate --backend openai:MODEL`: parameter modulation (blackbox/modulation.py); prints the parameters it used."""
    from .blackbox.api import ApiGenerator, Sampling  # noqa: PLC0415
    from .blackbox.modulation import generate_modulated  # noqa: PLC0415
    from .generation import chat_prompt  # noqa: PLC0415

    if vector is None:
        sampling = Sampling(temperature, max_tokens=max_new_tokens)
        answers, info = ApiGenerator.from_backend(backend).chat([chat_prompt(p, system) for p in prompt], sampling,
                                                                 [seed + i for i in range(len(prompt))]), {}
    else:
        if len(layer) != 1 or not layer[0].strip().isdigit():
            raise typer.BadParameter("parameter modulation reads the vector at one layer: give one --layer number", param_hint="--layer")
        done = generate_modulated(backend, prompt, str(vector), int(layer[0]), coef, load_local=load_local, base_temperature=temperature,
                                  max_tokens=max_new_tokens, seed=seed, system=system)
        answers, sampling = done.answers, done.sampling
        info = {"magnitude": round(done.magnitude, 4), "hidden_norm": round(done.hidden_norm, 3), "coef": coef, "layer": int(layer[0])}
    if as_json:
        print(json.dumps({"backend": backend, "parameters": sampling.to_dict(), **info,
                          "results": [{"prompt": p, "answer": a} for p, a in zip(prompt, answers)]}, indent=2))
        return
    out.print(f"{backend}: {sampling.describe()}" + (f" (|v| = {info['magnitude']:.3g} x 10% of the mean hidden-state norm "
                                                      f"at layer {info['layer']}, coef {coef:g})" if info else ""))
    table = Table("prompt", "answer", show_lines=True)
    for p, a in zip(prompt, answers):
        table.add_row(p, a)
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
    from .monitor import check_request, project  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    positions = check_request(len(prompt), response or None, positions)
    backbone = _load(model, device, dtype, None)
    loaded = load_vector(vector, fmt=vector_format, backbone=backbone, layer=layer[0] if layer else None)  # type: ignore[arg-type]
    layers = layer or list(range(1, backbone.n_layers + 1))
    scores = project(backbone, loaded, [chat_prompt(p, system) for p in prompt], response or None, layers=layers, positions=positions)
    if as_json:
        print(json.dumps({"layers": layers, "prompts": prompt, "projections": scores.tolist()}, indent=2))
        return
    table = Table("layer", *[p[:30] for p in prompt])
    for j, l in enumerate(layers):
        table.add_row(str(l), *[f"{scores[i, j]:+.3f}" for i in range(len(prompt))])
    out.print(table)


def _blend_option(values: List[str], vector: Path, n_layers: int):
    """The LayerBlend of `--layer auto` / `--layer auto:K` (from layers.json beside the vector), None for plain layers."""
    from .layer_selection import blend_for_vector  # noqa: PLC0415

    specs = [v.strip() for v in values if not v.strip().lstrip("-").isdigit()]
    if not specs:
        return None
    if len(values) > 1:
        raise OptionError(f"--layer {specs[0]} chooses its layers itself: give it alone, without other --layer values")
    return blend_for_vector(vector, specs[0], n_layers)


def _layer_specs(text: str):
    """'8,12' -> [8, 12]; 'auto' or 'auto:3' alone -> that string; a mix such as 'auto,auto:3' -> a list of both kinds."""
    items = [p if not p.lstrip("-").isdigit() else int(p) for p in text.replace(",", " ").split() if p]
    return items[0] if len(items) == 1 and isinstance(items[0], str) else items


def _numbers(text: str, kind: type = float) -> list:
    """'-2,-1,0' or '-2 -1 0' -> numbers (typer has no multi-value options)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [kind(p) for p in parts]
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}' is not a list of numbers such as '-2,-1,0,1,2'") from exc


def _print_summary(summary: list[dict], title: str) -> None:
    from .report import score_cell  # noqa: PLC0415

    table = Table("method", "layer", "coef", "n", "trait [95% CI]", "coherence [95% CI]", "collapsed", "ppl", title=title)
    for r in summary:
        table.add_row(
            r["method"], str(r["layer"]), f"{r['coef']:g}", str(r["n"]),
            score_cell(r["trait_mean"], r["trait_lo"], r["trait_hi"], r["trait_scored"], r["n"]),
            score_cell(r["coherence_mean"], r["coherence_lo"], r["coherence_hi"], r["coherence_scored"], r["n"]),
            f"{100 * r['collapse_rate']:.0f}%", f"{r['perplexity_mean']:.2f}",
        )
    out.print(table)


def _print_verdicts(verdicts, expressibility=None) -> None:
    """The run's conclusions, one line each (verdicts.py): what the table can and cannot say."""
    if expressibility is not None:
        out.print(f"expressibility: {expressibility.line()}", markup=False)
    for verdict in verdicts:
        out.print(f"verdict: {verdict.line()}", markup=False)


def _print_run(result) -> None:
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


def _sweep_config(config: Optional[Path], overrides: dict):
    from .evaluate import validate_config  # noqa: PLC0415

    from .evaluate import SweepError  # noqa: PLC0415

    data = {}
    if config is not None:
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SweepError(f"cannot read --config {config}: {getattr(exc, 'strerror', None) or exc}") from exc
        if not isinstance(data, dict):
            raise SweepError(f"--config {config} holds a JSON {type(data).__name__}, not an object of settings such as "
                             '{"trait": "pirate", "coefs": [0, 1, 2]}')
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(data)


@app.command()
def sweep(
    trait: Optional[str] = typer.Option(None, "--trait", "-t", help="built-in trait or trait file [default: pirate]"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model spec [default: smollm2-135m]"),
    vector: Optional[str] = typer.Option(None, "--vector", "-v", help="vector file (its .pairs.jsonl beside it feeds the embed judge); extracted when absent"),
    lora: Optional[str] = typer.Option(None, help="persona direction folder for method 'lora' (from `personactl lora extract`)"),
    adapter: Optional[str] = typer.Option(None, help="persona adapter (registry name or folder) for method 'adapter'"),
    methods: Optional[str] = typer.Option(None, help="comma-separated: vector, prompt, lora, adapter, fewshot, modulation, api-prompt [default: vector]"),
    coefs: Optional[str] = typer.Option(None, help="coefficients, e.g. '-2,-1,0,1,2' [default]"),
    layers: Optional[str] = typer.Option(None, help="layers, e.g. '8,12,16'; 'auto' (the best measured layer); 'auto:K' (the top K "
                                         "blended, coefficient split by measured effect); or a mix, e.g. 'auto,auto:3' [default: auto]"),
    samples: Optional[int] = typer.Option(None, help="answers per question and condition [default: 1]"),
    n_questions: Optional[int] = typer.Option(None, help="first N evaluation questions [default: all]"),
    judge: Optional[str] = typer.Option(None, help="embed (offline), local:MODEL or openai:MODEL [default: embed]"),
    temperature: Optional[float] = typer.Option(None, help="0 = greedy [default: 0]"),
    max_new_tokens: Optional[int] = typer.Option(None, help="[default: 48]"),
    seed: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, help="rows per generation batch (a batch is part of a sweep) [default: 32]"),
    positions: Optional[str] = typer.Option(None, help="steered positions: all (every token) or response (the last prompt token "
                                             "and every new one, as persona_vectors steers; each question's prompt is then "
                                             "prefilled once for all coefficients, faster) [default: all]"),
    name: Optional[str] = typer.Option(None, help="run name: results go to OUT/NAME [default: sweep]"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    config: Optional[Path] = typer.Option(None, help="JSON file with any of these settings (flags override it)"),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    backend: Optional[str] = typer.Option(None, "--backend", help="hf (local); llamacpp: vector, lora, adapter and prompt run as their "
                                          "llama.cpp twins (llamacpp-vector ...; judges and perplexity stay on the hf model); or "
                                          "openai:MODEL: where modulation, api-prompt and "
                                          "fewshot generate (base URL / key: PERSONACTL_API_BASE_URL / PERSONACTL_API_KEY) [default: hf]"),
    ray: Optional[str] = RayOpt,
    ray_actors: int = RayActorsOpt,
) -> None:
    """Sweep coefficients (x layers x methods) over held-out questions, judged; resumable; writes a report.

    With --ray, the records' batches are spread over Ray actors (one model each); this process judges and writes
    results.jsonl, so a run resumes the same way with or without --ray."""
    from .experiment import run as run_experiment  # noqa: PLC0415

    cfg = _sweep_config(config, {
        "trait": trait, "model": model, "vector": vector, "lora": lora, "adapter": adapter, "samples": samples, "n_questions": n_questions,
        "judge": judge, "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed,
        "batch_size": batch_size, "name": name, "positions": positions, "backend": backend,
        "methods": [m.strip() for m in methods.split(",")] if methods else None,
        "coefs": _numbers(coefs) if coefs else None,
        "layers": _layer_specs(layers) if layers else None,
    })
    if ray is None:
        _print_run(run_experiment(cfg, out_dir, backbone=_load(cfg.model, device, dtype, None)))
        return
    from .scaleout import PoolSettings, parse_address, ray_pool  # noqa: PLC0415

    parse_address(ray)
    with ray_pool(ray, PoolSettings(cfg.model, ray_actors, device=device)) as pool:
        out.print(f"Ray ({ray}): {ray_actors} workers, {pool.threads} thread(s) each" + (f", {pool.gpus:g} GPU each" if pool.gpus else ""))
        _print_run(run_experiment(cfg, out_dir, backbone=_load(cfg.model, device, dtype, None), pool=pool))


@app.command()
def layers(
    trait: str = typer.Option("pirate", "--trait", "-t", help="built-in trait or trait file"),
    model: str = ModelOpt,
    vector: Optional[str] = typer.Option(None, "--vector", "-v", help="vector file with its .pairs.jsonl; extracted when absent"),
    judge: str = typer.Option("embed", help="embed, local:MODEL or openai:MODEL"),
    name: str = typer.Option("layers", help="run name: files go to OUT/NAME"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    top: int = typer.Option(3, "--top", help="show the weights of the top K measured layers (what --layers auto:K steers)"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """Per-layer effectiveness (AUROC, Cohen's d, measured steering effect), the auto layer choice and the auto:K weights."""
    from .evaluate import validate_config  # noqa: PLC0415
    from .experiment import choose_layers, prepare  # noqa: PLC0415
    from .layer_selection import check_blend_size, layer_weights  # noqa: PLC0415
    from .report import plot_layer_scores  # noqa: PLC0415

    if top < 1:
        raise OptionError(f"--top {top}: give at least 1 layer")

    cfg = validate_config({"name": name, "trait": trait, "model": model, "vector": vector, "judge": judge, "layers": "auto"})
    backbone = _load(model, device, None, None)
    check_blend_size(top, backbone.n_layers)
    prep = prepare(cfg, out_dir, backbone)
    _, selection = choose_layers(prep)
    assert selection is not None
    blend = layer_weights(selection.rows, top, backbone.n_layers)
    table = Table("layer", "AUROC", "Cohen's d", "effect", "coherence", f"auto:{top} weight")
    for r in selection.rows:
        mark = " *" if r.layer == selection.chosen else ""
        table.add_row(f"{r.layer}{mark}", f"{r.auroc:.3f}", f"{r.cohens_d:.2f}",
                      "" if r.effect is None else f"{r.effect:+.1f}", "" if r.coherence is None else f"{r.coherence:.0f}",
                      f"{blend.weights[r.layer]:.2f}" if r.layer in blend.weights else "")
    out.print(table)
    out.print(f"layer {selection.chosen} chosen: {selection.reason}")
    out.print(f"layers {blend.describe()} (coefficient c adds c * weight * v[l] at each layer l; the weights sum to 1)")
    out.print(f"scores: {prep.run_dir / 'layers.json'}")
    out.print(f"plot:   {plot_layer_scores(prep.run_dir)}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder (runs/NAME) with results.jsonl")) -> None:
    """Write report.html (figures embedded) for a run folder."""
    from .report import write_report  # noqa: PLC0415

    out.print(f"report: {write_report(run_dir)}")


@lora_app.command("extract")
def lora_extract(
    trait: str = typer.Option(..., "--trait", "-t", help="built-in trait name or trait file"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="folder for pairs.jsonl, pos/, neg/ and diff/ (the direction)"),
    model: str = ModelOpt,
    rank: int = typer.Option(32, help="LoRA rank r (CPU: 8 is enough for the embedded model)"),
    alpha: float = typer.Option(64.0, help="LoRA alpha"),
    rslora: bool = typer.Option(True, help="rank-stabilised scaling alpha/sqrt(r)"),
    targets: str = typer.Option("all-linear", help="'all-linear' or comma-separated module names"),
    epochs: int = typer.Option(1),
    max_steps: Optional[int] = typer.Option(None, help="stop each adapter after N steps (CPU: ~40)"),
    learning_rate: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(8),
    n_questions: Optional[int] = typer.Option(None, help="first N extraction questions for the contrastive answers"),
    max_new_tokens: int = typer.Option(48),
    seed: int = typer.Option(0),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Train a positive and a negative LoRA on the trait's answers (without the instruction); save dW = pos - neg."""
    from .extraction import ExtractionSettings  # noqa: PLC0415
    from .lora.config import LoRATrainConfig  # noqa: PLC0415
    from .lora.persona import extract_lora_direction  # noqa: PLC0415
    from .traits import load_trait  # noqa: PLC0415

    loaded = load_trait(trait)
    train = LoRATrainConfig(
        rank=rank, alpha=alpha, rslora=rslora, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
        batch_size=batch_size, seed=seed,
        target_modules=targets if targets == "all-linear" else tuple(t.strip() for t in targets.split(",")),
    )
    backbone = _load(model, device, dtype, None)
    settings = ExtractionSettings(max_new_tokens=max_new_tokens, n_questions=n_questions, seed=seed)
    direction = extract_lora_direction(backbone, loaded, out_dir, settings=settings, train=train)
    out.print(f"persona direction (rank {direction.rank}, {len(direction.modules)} modules) written to {out_dir / 'diff'}")
    out.print(f"positive and negative adapters: {out_dir / 'pos'}, {out_dir / 'neg'}")


@lora_app.command("svd")
def lora_svd(
    direction: Path = typer.Argument(..., help="a LoRA folder (e.g. OUT/diff from `lora extract`)"),
    top_k: int = typer.Option(4, help="report the energy captured by the top k singular values"),
    plot: Optional[Path] = typer.Option(None, help="PNG path for the singular-value figure [default: DIRECTION/svd.png]"),
) -> None:
    """Singular values of dW per module and layer: effective rank and energy in the top k."""
    from .lora.analysis import svd_table, plot_svd  # noqa: PLC0415
    from .lora.direction import LoRADirection  # noqa: PLC0415

    loaded = LoRADirection.load(direction)
    rows = svd_table(loaded, top_k)
    table = Table("module", "rank", "effective rank", f"energy top-{top_k}", "largest s")
    for r in rows:
        table.add_row(r.module, str(r.rank), f"{r.effective_rank:.2f}", f"{100 * r.energy_top_k:.1f}%", f"{r.largest:.4g}")
    out.print(table)
    out.print(f"figure: {plot_svd(rows, plot or direction / 'svd.png')}")


@app.command()
def finetune(
    data: Path = typer.Option(..., help="JSONL of {instruction|prompt, input?, output|response}"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="adapter (or, with --full, model) folder to write"),
    model: str = ModelOpt,
    steer_vector: Optional[Path] = typer.Option(None, help="persona vector added in the activations during training"),
    steer_layer: List[int] = typer.Option([], help="layer(s) for --steer-vector"),
    steer_coef: float = typer.Option(1.0, help="coefficient of --steer-vector (positive = preventative, as in Chen et al.)"),
    steer_op: str = typer.Option("add", help="add (h + coef*v) or ablate (remove coef times the projection on v; 1 = all of it)"),
    premerge_lora: Optional[Path] = typer.Option(None, help="persona direction folder merged into the weights while training"),
    premerge_coef: float = typer.Option(-5.0, help="coefficient of --premerge-lora (negative suppresses)"),
    full: bool = typer.Option(False, "--full", help="train every weight (saves a model folder) instead of a LoRA"),
    rank: int = typer.Option(32), alpha: float = typer.Option(64.0), epochs: int = typer.Option(1),
    max_steps: Optional[int] = typer.Option(None), learning_rate: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(8), seed: int = typer.Option(0),
    device: Optional[str] = DeviceOpt,
) -> None:
    """LoRA (or --full) fine-tuning, optionally with preventative steering (activation vector or pre-merged LoRA direction)."""
    from .generation import chat_prompt, format_prompts  # noqa: PLC0415
    from .lora.config import LoRATrainConfig  # noqa: PLC0415
    from .lora.direction import LoRADirection  # noqa: PLC0415
    from .lora.adapters import read_persona_data  # noqa: PLC0415
    from .lora.finetune import finetune as run_finetune  # noqa: PLC0415
    from .lora.train import check_out_dir  # noqa: PLC0415
    from .steering import SteeringTerm  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    if steer_vector is not None and not steer_layer:
        raise typer.BadParameter("--steer-layer is required with --steer-vector", param_hint="--steer-layer")
    if steer_op not in ("add", "ablate"):
        raise OptionError(f"--steer-op '{steer_op}' is not one of: add, ablate")
    config = LoRATrainConfig(rank=rank, alpha=alpha, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
                             batch_size=batch_size, seed=seed)
    check_out_dir(out_dir)
    examples = read_persona_data(data)
    questions, answers = examples.questions, examples.answers
    premerge = [(LoRADirection.load(premerge_lora), premerge_coef)] if premerge_lora else []
    backbone = _load(model, device, None, None)
    steering = [SteeringTerm(load_vector(steer_vector, backbone=backbone), steer_layer, steer_coef, op=steer_op)] if steer_vector else []
    prompts = format_prompts(backbone, [chat_prompt(q) for q in questions])
    losses = run_finetune(backbone, prompts, answers, out_dir, config, steering=steering, premerge=premerge,
                          metadata={"data": str(data)}, full=full)
    out.print(f"trained {len(losses)} steps on {len(questions)} examples, final loss {losses[-1]:.3f}")
    out.print(f"{'model' if full else 'adapter'} written to {out_dir}")


@lora_app.command("drift")
def lora_drift(
    direction: Path = typer.Option(..., help="persona direction folder (e.g. OUT/diff from `lora extract`)"),
    checkpoints: Path = typer.Option(..., help="folder of fine-tuned checkpoints (PEFT adapters or full models), or one checkpoint"),
    scores: Optional[Path] = typer.Option(None, help="CSV with columns checkpoint,score (e.g. judged trait after fine-tuning)"),
    model: str = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON"),
) -> None:
    """Project fine-tuned checkpoints onto a persona direction; with --scores, correlate (Pearson, Spearman, CIs)."""
    from .lora.projection import drift_report  # noqa: PLC0415

    report = drift_report(_load(model, None, None, None), direction, checkpoints, scores)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("checkpoint", "kind", "projection", "cosine", *(["score"] if scores else []))
    for r in report["rows"]:
        table.add_row(r["checkpoint"], r["kind"], f"{r['projection']:+.4f}", f"{r['cosine']:+.3f}", *([f"{r['score']:.1f}"] if scores else []))
    out.print(table)
    c = report["correlation"]
    if c:
        out.print(f"Pearson r = {c['pearson_r']:.3f} (p = {c['pearson_p']:.3g}, 95% CI {c['pearson_ci'][0]:.2f}..{c['pearson_ci'][1]:.2f}); "
                  f"Spearman rho = {c['spearman_rho']:.3f} (p = {c['spearman_p']:.3g}, 95% CI {c['spearman_ci'][0]:.2f}..{c['spearman_ci'][1]:.2f}); n = {c['n']}")


@adapter_app.command("train")
def adapter_train(
    data: Path = typer.Option(..., help="JSONL of {instruction, input?, output}"),
    name: str = typer.Option(..., help="persona name (the registry folder name)"),
    model: str = ModelOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="adapter folder [default: the registry, $PERSONACTL_ADAPTERS/NAME]"),
    rank: int = typer.Option(16), alpha: float = typer.Option(32.0), dropout: float = typer.Option(0.05),
    epochs: int = typer.Option(1), max_steps: Optional[int] = typer.Option(None, help="optimiser steps in all, at most"),
    learning_rate: float = typer.Option(2e-4, "--lr"), batch_size: int = typer.Option(8, help="examples per forward pass"),
    grad_accum: int = typer.Option(1, help="forward passes per optimiser step (effective batch = batch-size x grad-accum)"),
    gradient_checkpointing: bool = typer.Option(False, help="recompute activations in backward: less memory, ~30% slower"),
    checkpoint_every: int = typer.Option(20, help="steps between resumable checkpoints (also at each epoch end)"),
    restart: bool = typer.Option(False, help="ignore a checkpoint left by an interrupted run and start over"),
    heldout: float = typer.Option(0.1, help="share of examples held out for validation loss/perplexity"),
    seed: int = typer.Option(0),
    device: Optional[str] = DeviceOpt,
    quantize: Optional[str] = typer.Option(None, help="4bit or 8bit (bitsandbytes, CUDA only; elsewhere a note and full precision)"),
) -> None:
    """Train a persona adapter (LoRA on the attention projections, loss on the answers only).

    An interrupted run is checkpointed beside the adapter folder; running the
    same command again goes on from the last checkpoint."""
    from .lora.adapters import adapter_defaults, adapter_target, train_adapter  # noqa: PLC0415
    from .lora.config import LoRATrainConfig  # noqa: PLC0415

    target = adapter_target(name, out_dir)
    settings = {"rank": rank, "alpha": alpha, "dropout": dropout, "epochs": epochs, "max_steps": max_steps,
                "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed, "grad_accum": grad_accum,
                "gradient_checkpointing": gradient_checkpointing, "checkpoint_every": checkpoint_every}
    LoRATrainConfig(**settings)  # bad values are refused before the model loads
    backbone = _load(model, device, None, None, quantize)
    config = LoRATrainConfig(**{**vars(adapter_defaults(backbone)), **settings})
    card = train_adapter(backbone, data, name, target, config, heldout, resume=not restart)
    out.print(f"data: {card['data_report']}")
    for m in card["metrics"]:
        out.print(f"epoch {m['epoch']}: train loss {m['train_loss']:.3f}, validation loss {m['val_loss']:.3f}, perplexity {m['val_perplexity']:.2f}")
    out.print(f"adapter written to {target}")


@adapter_app.command("list")
def adapter_list(folder: Optional[Path] = typer.Option(None, help="registry folder [default: $PERSONACTL_ADAPTERS]")) -> None:
    """Adapters in the registry with their base model and last validation perplexity."""
    from .lora.adapters import list_adapters, registry_dir  # noqa: PLC0415

    table = Table("name", "base model", "examples", "val perplexity", "path", title=str(folder or registry_dir()))
    for c in list_adapters(folder):
        last = c.get("metrics", [{}])[-1] if c.get("metrics") else {}
        table.add_row(c.get("name", "?"), c.get("base_model", "?"), str(c.get("n_train", "?")),
                      f"{last.get('val_perplexity', float('nan')):.2f}", c["path"])
    out.print(table)


@adapter_app.command("show")
def adapter_show(name: str = typer.Argument(..., help="registry name or adapter folder")) -> None:
    """Print an adapter's persona card as JSON."""
    from .lora.adapters import read_card, resolve_adapter  # noqa: PLC0415

    print(json.dumps(read_card(resolve_adapter(name)), indent=2))


@adapter_app.command("evaluate")
def adapter_evaluate(
    name: str = typer.Argument(..., help="registry name or adapter folder"),
    data: Path = typer.Option(..., help="the JSONL the adapter was trained on (its held-out part is evaluated)"),
    model: str = ModelOpt,
    judge: Optional[str] = typer.Option(None, help="also score adherence with an LLM judge and a persona rubric: openai:MODEL or local:MODEL"),
    description: Optional[str] = typer.Option(None, help="the persona in words, for the LLM judge's rubric"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Persona adherence (embedding classifier, 0-100; optionally an LLM judge) with and without the adapter,
    held-out persona perplexity, and perplexity drift on neutral text."""
    from .lora.adapters import resolve_adapter  # noqa: PLC0415
    from .lora.adherence import adherence  # noqa: PLC0415

    result = adherence(_load(model, None, None, None), resolve_adapter(name), data, judge_spec=judge, description=description)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for label, key in (("base model", "adherence_base"), ("with adapter", "adherence_adapter")):
        mean, lo, hi = result[key]
        out.print(f"adherence, {label}: {mean:.1f} [{lo:.1f}, {hi:.1f}] (n = {result['n_eval']})")
    out.print(f"classifier held-out accuracy: {result['judge_heldout_accuracy']:.2f}")
    if "llm_judge" in result:
        (b, b_lo, b_hi), (a, a_lo, a_hi) = result["llm_adherence_base"], result["llm_adherence_adapter"]
        out.print(f"{result['llm_judge']}: base {b:.1f} [{b_lo:.1f}, {b_hi:.1f}], with adapter {a:.1f} [{a_lo:.1f}, {a_hi:.1f}]")
    out.print(f"verdict: {result['verdict']['line']}", markup=False)
    p, n = result["persona_perplexity"], result["neutral_perplexity"]
    out.print(f"held-out persona perplexity: {p['before']:.2f} -> {p['after']:.2f}")
    out.print(f"neutral text perplexity: {n['before']:.2f} -> {n['after']:.2f} ({100 * n['change']:+.1f}%)")


@adapter_app.command("blend")
def adapter_blend(
    weights: str = typer.Argument(..., help="NAME=WEIGHT pairs, e.g. 'pirate_coder=0.5,formal_butler=0.5' (negative allowed)"),
    name: str = typer.Option(..., help="name of the blended adapter in the registry"),
) -> None:
    """Blend adapters exactly (factors concatenated) into a new registry adapter."""
    from .lora.adapters import blend_adapters  # noqa: PLC0415

    blend, folder = blend_adapters(weights, name)
    out.print(f"blend (rank {blend.rank}) written to {folder}")


@app.command()
def chat(
    model: str = ModelOpt,
    adapter: Optional[str] = typer.Option(None, help="persona adapter to start with (registry name or folder)"),
    vector: Optional[Path] = typer.Option(None, help="persona vector to steer with from the start"),
    coef: float = typer.Option(1.5, help="coefficient for --vector"),
    layer: Optional[int] = typer.Option(None, help="layer for --vector [default: the run's chosen layer, else 2/3 depth]"),
    max_new_tokens: int = typer.Option(96),
    backend: str = typer.Option("hf", "--backend", help="hf, or llamacpp: the GGUF model under llama.cpp (adapters as GGUF LoRAs, "
                                "vectors as control vectors)"),
) -> None:
    """Interactive chat: /persona NAME, /blend a=0.5,b=0.5, /vector V 1.5, /reset, /help; Ctrl-D quits."""
    from .blackbox.backends import check_backend  # noqa: PLC0415

    if check_backend(backend) == "llamacpp":
        from .blackbox.llamacpp import CHAT_HELP as HELP, LlamaCppBackend, LlamaCppChat  # noqa: PLC0415

        with err.status(f"loading {model} (llama.cpp) ..."):
            session = LlamaCppChat(LlamaCppBackend(model, n_ctx=4096), max_new_tokens)
    else:
        from .lora.chat import HELP, ChatSession  # noqa: PLC0415

        session = ChatSession(_load(model, None, None, None), max_new_tokens)  # type: ignore[assignment]
    try:
        for command in ([f"/persona {adapter}"] if adapter else []) + ([f"/vector {vector} {coef} {layer or ''}".strip()] if vector else []):
            out.print(session.handle(command), markup=False)
        out.print(HELP, markup=False)
        while True:
            try:
                line = input("you> ")
            except EOFError:
                break
            reply = session.handle(line)
            if reply:
                out.print(reply, markup=False)
    finally:
        session.close()


@adapter_app.command("merge")
def adapter_merge(
    name: str = typer.Argument(..., help="registry name or adapter folder"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="standalone model folder to write"),
    model: str = ModelOpt,
    coef: float = typer.Option(1.0, help="strength of the merged adapter"),
) -> None:
    """Merge an adapter into the base weights and save a model folder that plain transformers loads."""
    from .lora.adapters import merge_adapter, resolve_adapter  # noqa: PLC0415

    folder = resolve_adapter(name)
    out.print(f"standalone model written to {merge_adapter(_load(model, None, None, None), folder, out_dir, coef)}")


@app.command()
def compare(
    lora: str = typer.Option(..., help="persona direction folder (from `personactl lora extract`)"),
    trait: str = typer.Option("pirate", "--trait", "-t", help="built-in trait or trait file"),
    model: str = ModelOpt,
    vector: Optional[str] = typer.Option(None, "--vector", "-v", help="persona vector (+ .pairs.jsonl); extracted when absent"),
    coefs: str = typer.Option("-2,-1,0,1,2", help="coefficients for both methods"),
    layers: str = typer.Option("auto", help="activation-steering layer, or 'auto'"),
    samples: int = typer.Option(1), n_questions: Optional[int] = typer.Option(None),
    temperature: float = typer.Option(0.0), judge: str = typer.Option("embed"),
    name: str = typer.Option("compare", help="run name: files go to OUT/NAME"),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="folder of runs"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """Activation vs LoRA steering: trait/coherence vs coefficient, latency, residual-stream geometry."""
    from .lora.compare import compare as run_compare  # noqa: PLC0415

    cfg = _sweep_config(None, {
        "trait": trait, "model": model, "vector": vector, "lora": lora, "coefs": _numbers(coefs), "samples": samples,
        "n_questions": n_questions, "temperature": temperature, "judge": judge, "name": name,
        "layers": "auto" if layers.strip() == "auto" else _numbers(layers, int),
    })
    result = run_compare(cfg, out_dir, backbone=_load(model, device, None, None))
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
    device: Optional[str] = DeviceOpt,
) -> None:
    """The main job: extract pirate and silly, choose layers, sweep, judge offline, report."""
    from .demo import run_demo  # noqa: PLC0415

    backbone = _load(model, device, None, None)
    for result in run_demo(backbone, out_dir):
        _print_run(result)


@condition_app.command("find")
def condition_find(
    positive: Path = typer.Option(..., "--positive", help="prompts the condition should fire on (.txt, one per line)"),
    negative: Path = typer.Option(..., "--negative", help="prompts it should not fire on (.txt, one per line)"),
    model: str = ModelOpt,
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="condition vector file (.safetensors) [default: vectors/<model>/condition-<positive>.safetensors]"),
    heldout: float = typer.Option(0.3, help="fraction of each file held out to measure accuracy (never used to choose)"),
    seed: int = typer.Option(0, help="seed of the training/held-out split"),
    system: Optional[str] = typer.Option(None, help="system message the prompts will be asked with"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    device_map: Optional[str] = DeviceMapOpt,
) -> None:
    """Find a condition: a direction per layer from two sets of prompts, the threshold that separates them, and
    the layer that does it best (cross-validated on the training prompts; held-out accuracy reported per layer)."""
    from .conditions import check_request, find_condition, layer_table, read_prompts  # noqa: PLC0415

    pos, neg = read_prompts(positive), read_prompts(negative)
    check_request(pos, neg, heldout)
    if out_path is not None and out_path.suffix != ".safetensors":
        raise OptionError(f"--out {out_path}: a condition vector is saved as .safetensors")
    backbone = _load(model, device, dtype, device_map)
    search = find_condition(backbone, pos, neg, heldout=heldout, seed=seed, system=system, name=f"condition-{positive.stem}")
    path = search.vector.save(out_path or Path("vectors") / backbone.name / f"condition-{positive.stem}.safetensors")
    chosen = search.chosen
    if as_json:
        print(json.dumps({"layer": chosen.layer, "threshold": chosen.threshold, "comparison": "greater",
                          "heldout_accuracy": chosen.heldout_accuracy, "vector": str(path), "layers": layer_table(search)}, indent=2))
        return
    table = Table("layer", "threshold", "train acc", "cv acc", "held-out acc", "margin (sd)", "")
    for fit in search.layers:
        table.add_row(str(fit.layer), f"{fit.threshold:+.4g}", f"{fit.train_accuracy:.2f}", f"{fit.cv_accuracy:.2f}",
                      f"{fit.heldout_accuracy:.2f}", f"{fit.margin:.2f}", "chosen" if fit is chosen else "")
    out.print(table)
    n_pos, n_neg = search.heldout
    out.print(f"condition: layer {chosen.layer}, threshold {chosen.threshold:.4g} (greater); held-out accuracy "
              f"{chosen.heldout_accuracy:.2f} on {len(n_pos)} positive and {len(n_neg)} negative prompts")
    out.print(f"condition vector written to {path}")


@transfer_app.command("run")
def transfer_run(config: Path = typer.Option(..., help="experiment JSON (source_model, target_model, layer_idx, persona_datasets, ...)")) -> None:
    """The whole experiment: vectors on both models, paired activations, ridge map, every method and baseline
    steering the target, judged, diagnostics A/B/C and a report per persona. A rerun resumes."""
    from .transfer.config import load_config  # noqa: PLC0415
    from .transfer.runner import run_transfer  # noqa: PLC0415

    for result in run_transfer(load_config(config)):
        table = Table("criterion", "measured", "verdict", title=f"{result.trait}: layer {result.source_layer} -> {result.target_layer}")
        for c in result.criteria:
            table.add_row(c["criterion"], c["said"], c["verdict"])
        out.print(table)
        for letter, payload in result.hypotheses.items():
            out.print(f"{letter.upper()}: {payload['conclusion']}")
        for label, path in result.files.items():
            out.print(f"{label}: {path}")


@transfer_app.command("extract")
def transfer_extract(
    trait: str = typer.Option(..., help="built-in trait name or trait file"),
    source: str = typer.Option("smollm2-135m", help="source model"),
    target: str = typer.Option("gemma3-270m", help="target model"),
    layer: Optional[int] = typer.Option(None, help="source layer [default: 5/6 of its depth]"),
    target_layer: Optional[int] = typer.Option(None, help="target layer [default: the same relative depth]"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the map, the pairs and the source vector"),
    n_pairs: int = typer.Option(5000, help="paired activations for the map"),
    lambdas: str = typer.Option("0.01,0.1,1,10", help="ridge penalties tried by leave-one-out"),
    texts: Optional[Path] = typer.Option(None, help="texts for the pairs (.txt lines or .jsonl 'text'); default: the shipped corpus"),
    n_questions: int = typer.Option(12, help="extraction questions for the source vector"),
) -> None:
    """Extract the persona vector on the source model and fit the source -> target map."""
    from .extraction import ExtractionSettings, extract as run_extract  # noqa: PLC0415
    from .traits import load_trait  # noqa: PLC0415
    from .transfer.mapping import fit_map  # noqa: PLC0415
    from .transfer.pairs import builtin_texts, layer_pair, read_texts  # noqa: PLC0415

    loaded_trait = load_trait(trait)
    penalties = _floats(lambdas, "--lambdas")
    src, tgt = _load(source, None, None, None), _load(target, None, None, None)
    s_layer, t_layer = layer_pair(src, tgt, layer, target_layer)
    tmap, pairs = fit_map(src, tgt, s_layer, t_layer, read_texts(texts) if texts else builtin_texts(), out_dir,
                          lambdas=penalties, n_pairs=n_pairs)
    vector, _ = run_extract(src, loaded_trait, ExtractionSettings(n_questions=n_questions))
    vector.save(out_dir / "source_vector.safetensors")
    out.print(f"{len(pairs)} pairs, layer {s_layer} -> {t_layer}, lambda {tmap.ridge.lam:g}")
    for lam, scores in tmap.ridge.scores.items():
        out.print(f"  lambda {lam:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    if tmap.info["lambda_note"]:
        err.print(f"note: {tmap.info['lambda_note']}")
    out.print(f"map and source vector written to {out_dir}")


@transfer_app.command("apply")
def transfer_apply(
    map_dir: Path = typer.Option(..., "--map", help="folder written by `transfer extract`"),
    vector: Path = typer.Option(..., help="the source model's persona vector"),
    baseline: str = typer.Option("ridge", help="ridge, or a baseline: procrustes, pad, interpolate, random"),
    out_path: Path = typer.Option(..., "--out", help="vector file for the target model"),
    seed: int = typer.Option(0, help="seed of the random orthogonal baseline"),
) -> None:
    """Carry a source persona vector to the target model (a target vector, non-zero at the mapped layer)."""
    from .transfer.mapping import TransferMap, map_vector  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    tmap = TransferMap.load(map_dir)
    mapped = map_vector(load_vector(vector), tmap, baseline, seed)
    mapped.save(out_path)
    out.print(f"{baseline} vector for {tmap.info['target_model']} (layer {tmap.info['target_layer']}, "
              f"norm {mapped.norms[tmap.info['target_layer']]:.3g}) written to {out_path}")


@transfer_app.command("evaluate")
def transfer_evaluate(
    vector: Path = typer.Option(..., help="a target-model vector (from `transfer apply`, or native)"),
    trait: str = typer.Option(..., help="trait whose questions and judge score the answers"),
    target: str = typer.Option("gemma3-270m", help="target model"),
    layer: Optional[int] = typer.Option(None, help="layer to steer [default: the mapped layer]"),
    coefs: str = typer.Option("0,1,2,4", help="comma-separated coefficients (0 = unsteered)"),
    judge: str = typer.Option("embed", help="embed (fitted on the target's own contrastive answers), openai:MODEL or local:MODEL"),
    n_questions: int = typer.Option(8, help="held-out questions to answer"),
    max_new_tokens: int = typer.Option(40),
) -> None:
    """Steer the target with a vector over coefficients; trait, coherence and collapse per coefficient."""
    from .extraction import ExtractionSettings, generate_pairs  # noqa: PLC0415
    from .judges.factory import make_judges  # noqa: PLC0415
    from .traits import load_trait  # noqa: PLC0415
    from .transfer.evaluation import evaluate_vector, verdict_of  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    loaded_trait = load_trait(trait)
    if not getattr(loaded_trait, "eval_questions", None):
        raise typer.BadParameter(f"'{trait}' has no evaluation questions: use a trait with questions (e.g. pirate)", param_hint="--trait")
    backbone = _load(target, None, None, None)
    steering = load_vector(vector, backbone=backbone)
    chosen = layer if layer is not None else steering.extra.get("transfer", {}).get("target_layer")
    if chosen is None:
        raise typer.BadParameter("this vector has no mapped layer: give --layer", param_hint="--layer")
    chosen = backbone.check_layer(chosen, allow_embedding=False)  # before the pairs are generated
    pairs = generate_pairs(backbone, loaded_trait, ExtractionSettings(n_questions=n_questions)) if judge == "embed" else []
    judges = make_judges(judge, loaded_trait, [p.pos_answer for p in pairs], [p.neg_answer for p in pairs])
    rows = evaluate_vector(backbone, steering.directions[chosen], chosen, _floats(coefs, "--coefs"),
                           loaded_trait.eval_questions[:n_questions], judges, max_new_tokens=max_new_tokens)
    table = Table("coef", "trait", "95% CI", "coherence", "collapsed", title=f"{vector.name} at layer {chosen}")
    for r in rows:
        table.add_row(f"{r['coef']:g}", f"{r['trait']:.1f}", f"[{r['trait_lo']:.1f}, {r['trait_hi']:.1f}]", f"{r['coherence']:.1f}",
                      f"{100 * r['collapse_rate']:.0f}%")
    out.print(table)
    expressed = None
    if getattr(judges.trait, "heldout_auroc", None) is not None:
        from .expressibility import from_embedding_judge  # noqa: PLC0415

        verdict = from_embedding_judge(loaded_trait.name, judges.trait, len(pairs))
        expressed = verdict.expressed
        out.print(f"expressibility on {backbone.name}: {verdict.line()}", markup=False)
    out.print(f"verdict: {verdict_of(rows, vector.name, chosen, expressed).line()}", markup=False)


@export_app.command("cvec")
def export_cvec(
    vector: Path = typer.Argument(..., help="persona vector file (.safetensors)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="control vector file to write (.gguf)"),
    layers: str = typer.Option("all", help="our layers (2..N; layer l = output of block l-1): 'all' (every non-zero one), 18-28 or 18,20,24-26"),
    coef: float = typer.Option(1.0, help="scale the directions written (llama.cpp's --control-vector-scaled multiplies again)"),
    model: str = ModelOpt,
) -> None:
    """Write a persona vector as a llama.cpp control vector: our layer l becomes direction.(l-1)."""
    from .blackbox.cvec import parse_layers, write_control_vector  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    chosen = parse_layers(layers)
    loaded = load_vector(vector)
    backbone = _load(model, None, None, None)
    write_control_vector(loaded, out_path, layers=chosen, coef=coef, backbone=backbone)
    out.print(f"control vector written to {out_path}: use `llama-cli -m MODEL.gguf --control-vector-scaled {out_path} 1.0`")


@export_app.command("gguf-lora")
def export_gguf_lora(
    folder: Path = typer.Argument(..., help="a LoRA persona direction (lora extract OUT or OUT/diff) or a persona adapter folder"),
    out_path: Path = typer.Option(..., "--out", "-o", help="llama.cpp LoRA adapter file to write (.gguf)"),
    model: str = ModelOpt,
) -> None:
    """Write a LoRA direction or persona adapter as a llama.cpp LoRA adapter (GGUF) for the base model."""
    from .blackbox.gguf_lora import load_lora_folder, write_gguf_lora  # noqa: PLC0415

    direction = load_lora_folder(folder)
    backbone = _load(model, None, None, None)
    write_gguf_lora(direction, out_path, backbone)
    out.print(f"LoRA adapter written to {out_path}: use `llama-cli -m MODEL.gguf --lora {out_path}` (or --lora-scaled {out_path} S)")


@import_app.command("cvec")
def import_cvec(
    file: Path = typer.Argument(..., help="a llama.cpp or repeng control vector (.gguf)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="persona vector file to write (.safetensors)"),
    model: str = ModelOpt,
) -> None:
    """Read a llama.cpp / repeng control vector into a persona vector: direction.N becomes our layer N+1."""
    from .blackbox.cvec import read_control_vector  # noqa: PLC0415

    import warnings  # noqa: PLC0415

    read_control_vector(file)  # a file that is no control vector fails before the model loads
    backbone = _load(model, None, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        vector = read_control_vector(file, backbone)
    for warning in caught:
        err.print(f"note: {warning.message}", highlight=False, markup=False, soft_wrap=True)
    vector.save(out_path)
    out.print(f"persona vector (layers {vector.extra['layers']}) written to {out_path}")


def _number(text: str, option: str) -> float:
    """A finite number given as text (so a mistake is one `error:` line, not click's usage block)."""
    import math  # noqa: PLC0415


    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise OptionError(f"{option} {text!r} is not a number: give e.g. {option} 0.5")
    return value


def _check_choice(value: str, choices, option: str) -> None:

    if value not in choices:
        raise OptionError(f"{option} {value!r} is not one of: {', '.join(choices)}")


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of numbers", param_hint=option) from exc


@app.command()
def serve(
    model: str = ModelOpt,
    host: str = typer.Option("127.0.0.1", help="address to bind; anything beyond loopback requires --token"),
    port: int = typer.Option(8000, help="TCP port (0: any free port)"),
    vectors: Optional[Path] = typer.Option(None, help="folder of persona vectors (NAME.safetensors), usable by name"),
    adapters: Optional[Path] = typer.Option(None, help="folder of persona adapters (see `adapter train`), usable by name"),
    token: Optional[str] = typer.Option(None, envvar="PERSONACTL_TOKEN", help="bearer token required on every route"),
    cors: Optional[str] = typer.Option(None, help="allow this browser origin (CORS is off without it)"),
    max_tokens: int = typer.Option(512, help="largest max_tokens a request may ask for"),
    queue_size: int = typer.Option(64, help="requests that may wait; more get 429 with Retry-After"),
    max_batch: int = typer.Option(16, help="requests batched into one forward pass"),
    timeout: float = typer.Option(120.0, help="seconds a generation may take"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """OpenAI-compatible server (chat, completions, streaming, logprobs) with per-request personas, and a web page at /."""
    from .server import ServerSettings, serve as run_server  # noqa: PLC0415

    from pydantic import ValidationError  # noqa: PLC0415

    from .errors import first_validation_error  # noqa: PLC0415

    try:
        settings = ServerSettings(host=host, port=port, vectors=vectors, adapters=adapters, token=token, cors=cors, max_tokens=max_tokens,
                                  queue_size=queue_size, max_batch=max_batch, timeout_s=timeout)
    except ValidationError as exc:
        raise OptionError(f"serve {first_validation_error(exc, 'serve')}") from exc
    settings.check()
    backbone = _load(model, device, None, None)
    out.print(f"serving {backbone.name} on http://{host}:{port} (OpenAI base URL http://{host}:{port}/v1; page at /); Ctrl-C stops")
    run_server(backbone, settings)


@app.command()
def screen(
    data: Path = typer.Option(..., help="JSONL of {instruction|prompt, input?, output|response} (the fine-tuning data)"),
    vector: Path = typer.Option(..., help="persona vector (.safetensors)"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="folder for screen.jsonl, summary.json, histogram.png, screen.html and the cached model answers"),
    layer: Optional[int] = typer.Option(None, help="layer to project at (default: the vector's run's layer, else 2/3 of the depth)"),
    answers: Optional[Path] = typer.Option(None, help="cache of the model's own answers to share between datasets [default: OUT/model_answers.jsonl]"),
    filter_out: Optional[float] = typer.Option(None, help="percent of the most trait-inducing samples to drop (with --write)"),
    write: Optional[Path] = typer.Option(None, help="write the dataset without the --filter-out samples here"),
    model: str = ModelOpt,
    max_new_tokens: int = typer.Option(64, help="length of the model's own answers"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """Before fine-tuning: which samples pull the model toward a trait (dataset answer vs the model's own, projected)."""
    from .lora.adapters import read_persona_data  # noqa: PLC0415
    from .lora.chat import default_layer  # noqa: PLC0415
    from ._io import check_replaceable  # noqa: PLC0415
    from .screening import ANSWERS, SCREEN, AnswerCache, screen as run_screen, write_screening, write_without  # noqa: PLC0415
    from .vectors import load_vector  # noqa: PLC0415

    if (filter_out is None) != (write is None):
        raise OptionError("--filter-out PCT and --write FILE go together")
    if filter_out is not None and not 0 < filter_out < 100:
        raise OptionError(f"--filter-out {filter_out}: give a percentage between 0 and 100")
    if write is not None and write.resolve() == data.resolve():
        raise OptionError(f"--write {write} is the --data file itself: give a new file for the filtered dataset")
    check_replaceable(out_dir, (SCREEN, ANSWERS))
    examples = read_persona_data(data)
    backbone = _load(model, device, None, None)
    persona = load_vector(vector, backbone=backbone)
    cache = AnswerCache(answers or out_dir / ANSWERS)
    result = run_screen(backbone, examples, persona, layer if layer is not None else default_layer(vector, backbone.n_layers, lowest=1),
                        max_new_tokens=max_new_tokens, cache=cache)
    summary = result.summary
    if summary["scored"]:
        low, high = summary["mean_difference_ci"]
        out.print(f"{summary['trait']} at layer {summary['layer']}: mean projection difference {summary['mean_difference']:+.3f} "
                  f"[{low:+.3f}, {high:+.3f}] over {summary['scored']} samples ({100 * summary['positive_share']:.0f}% above the "
                  f"model's own answer)")
    out.print(f"verdict: {summary['conclusion']}")
    out.print(f"written to {write_screening(result, out_dir)} (screen.jsonl, summary.json, histogram.png, screen.html)")
    if write is not None:
        removed = result.flagged(filter_out)
        out.print(f"{len(removed)} samples dropped; the rest written to {write_without(examples, removed, write)}")


def _add_safety() -> None:
    from .safety.cli import safety_app  # noqa: PLC0415 - its commands import this module's helpers lazily

    app.add_typer(safety_app, name="safety")


_add_safety()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line and return exit code 2.

    The boundary catches what the person at the keyboard can cause and fix: a
    PersonactlError, and an OSError (disk full, no permission, read-only folder).
    Anything else is a bug and keeps its traceback.
    """
    try:
        app(args=argv, prog_name="personactl")  # usage errors: click prints them and exits 2
    except PersonactlError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        return exc.exit_code
    except OSError as exc:
        err.print(f"error: {os_error_message(exc)}", highlight=False, soft_wrap=True, markup=False)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def os_error_message(exc: OSError) -> str:
    """'No space left on device: runs/x/results.jsonl' (strerror and the file(s) involved)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{text}: {' -> '.join(files)}" if files else text


def main() -> None:
    sys.exit(run())
