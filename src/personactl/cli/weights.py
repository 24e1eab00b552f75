"""Weight space and fine-tuning: LoRA persona directions, fine-tuning, persona adapters, chat, data screening."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table

from ..errors import OptionError
from . import _common
from ._common import DeviceOpt, DtypeOpt, ModelOpt, adapter_app, app, err, lora_app, out

if TYPE_CHECKING:
    from ..steering import Op


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
    max_steps: int | None = typer.Option(None, help="stop each adapter after N steps (CPU: ~40)"),
    learning_rate: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(8),
    n_questions: int | None = typer.Option(None, help="first N extraction questions for the contrastive answers"),
    max_new_tokens: int = typer.Option(48),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    dtype: str | None = DtypeOpt,
) -> None:
    """Train a positive and a negative LoRA on the trait's answers (without the instruction); save dW = pos - neg."""
    from ..extraction import ExtractionSettings  # noqa: PLC0415
    from ..lora import LoRATrainConfig, extract_lora_direction  # noqa: PLC0415
    from ..traits import load_trait  # noqa: PLC0415

    loaded = load_trait(trait)
    train = LoRATrainConfig(
        rank=rank,
        alpha=alpha,
        rslora=rslora,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        target_modules=targets if targets == "all-linear" else tuple(t.strip() for t in targets.split(",")),
    )
    backbone = _common._load(model, device, dtype, None)
    settings = ExtractionSettings(max_new_tokens=max_new_tokens, n_questions=n_questions, seed=seed)
    direction = extract_lora_direction(backbone, loaded, out_dir, settings=settings, train=train)
    out.print(f"persona direction (rank {direction.rank}, {len(direction.modules)} modules) written to {out_dir / 'diff'}")
    out.print(f"positive and negative adapters: {out_dir / 'pos'}, {out_dir / 'neg'}")


@lora_app.command("svd")
def lora_svd(
    direction: Path = typer.Argument(..., help="a LoRA folder (e.g. OUT/diff from `lora extract`)"),
    top_k: int = typer.Option(4, help="report the energy captured by the top k singular values"),
    plot: Path | None = typer.Option(None, help="PNG path for the singular-value figure [default: DIRECTION/svd.png]"),
) -> None:
    """Singular values of dW per module and layer: effective rank and energy in the top k."""
    from ..lora import LoRADirection, plot_svd, svd_table  # noqa: PLC0415

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
    steer_vector: Path | None = typer.Option(None, help="persona vector added in the activations during training"),
    steer_layer: list[str] = typer.Option([], help="layer(s) for --steer-vector: 9,10,11 or 18-28"),
    steer_coef: float = typer.Option(1.0, help="coefficient of --steer-vector (positive = preventative, as in Chen et al.)"),
    steer_op: str = typer.Option("add", help="add (h + coef*v) or ablate (remove coef times the projection on v; 1 = all of it)"),
    premerge_lora: Path | None = typer.Option(None, help="persona direction folder merged into the weights while training"),
    premerge_coef: float = typer.Option(-5.0, help="coefficient of --premerge-lora (negative suppresses)"),
    full: bool = typer.Option(False, "--full", help="train every weight (saves a model folder) instead of a LoRA"),
    rank: int = typer.Option(32),
    alpha: float = typer.Option(64.0),
    epochs: int = typer.Option(1),
    max_steps: int | None = typer.Option(None),
    learning_rate: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
) -> None:
    """LoRA (or --full) fine-tuning, optionally with preventative steering (activation vector or pre-merged LoRA direction)."""
    from ..generation import chat_prompt, format_prompts  # noqa: PLC0415
    from ..layer_list import layer_numbers  # noqa: PLC0415
    from ..lora import LoRADirection, LoRATrainConfig, check_out_dir, read_persona_data  # noqa: PLC0415
    from ..lora import finetune as run_finetune  # noqa: PLC0415
    from ..steering import SteeringTerm  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    if steer_vector is not None and not steer_layer:
        raise typer.BadParameter("--steer-layer is required with --steer-vector", param_hint="--steer-layer")
    steer_layers = layer_numbers(steer_layer, "--steer-layer") if steer_vector else []
    if steer_op not in ("add", "ablate"):
        raise OptionError(f"--steer-op '{steer_op}' is not one of: add, ablate")
    config = LoRATrainConfig(
        rank=rank, alpha=alpha, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed
    )
    check_out_dir(out_dir)
    examples = read_persona_data(data)
    questions, answers = examples.questions, examples.answers
    premerge = [(LoRADirection.load(premerge_lora), premerge_coef)] if premerge_lora else []
    backbone = _common._load(model, device, None, None)
    op = cast("Op", steer_op)  # checked above
    steering = [SteeringTerm(load_vector(steer_vector, backbone=backbone), steer_layers, steer_coef, op=op)] if steer_vector else []
    prompts = format_prompts(backbone, [chat_prompt(q) for q in questions])
    losses = run_finetune(backbone, prompts, answers, out_dir, config, steering=steering, premerge=premerge, metadata={"data": str(data)}, full=full)
    out.print(f"trained {len(losses)} steps on {len(questions)} examples, final loss {losses[-1]:.3f}")
    out.print(f"{'model' if full else 'adapter'} written to {out_dir}")


@lora_app.command("drift")
def lora_drift(
    direction: Path = typer.Option(..., help="persona direction folder (e.g. OUT/diff from `lora extract`)"),
    checkpoints: Path = typer.Option(..., help="folder of fine-tuned checkpoints (PEFT adapters or full models), or one checkpoint"),
    scores: Path | None = typer.Option(None, help="CSV with columns checkpoint,score (e.g. judged trait after fine-tuning)"),
    model: str = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON"),
) -> None:
    """Project fine-tuned checkpoints onto a persona direction; with --scores, correlate (Pearson, Spearman, CIs)."""
    from ..lora import drift_report  # noqa: PLC0415

    report = drift_report(_common._load(model, None, None, None), direction, checkpoints, scores)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("checkpoint", "kind", "projection", "cosine", *(["score"] if scores else []))
    for r in report["rows"]:
        table.add_row(r["checkpoint"], r["kind"], f"{r['projection']:+.4f}", f"{r['cosine']:+.3f}", *([f"{r['score']:.1f}"] if scores else []))
    out.print(table)
    c = report["correlation"]
    if c:
        out.print(
            f"Pearson r = {c['pearson_r']:.3f} (p = {c['pearson_p']:.3g}, 95% CI {c['pearson_ci'][0]:.2f}..{c['pearson_ci'][1]:.2f}); "
            f"Spearman rho = {c['spearman_rho']:.3f} (p = {c['spearman_p']:.3g}, 95% CI {c['spearman_ci'][0]:.2f}..{c['spearman_ci'][1]:.2f}); n = {c['n']}"
        )


@adapter_app.command("train")
def adapter_train(
    data: Path = typer.Option(..., help="JSONL of {instruction, input?, output}"),
    name: str = typer.Option(..., help="persona name (the registry folder name)"),
    model: str = ModelOpt,
    out_dir: Path | None = typer.Option(None, "--out", help="adapter folder [default: the registry, $PERSONACTL_ADAPTERS/NAME]"),
    rank: int = typer.Option(16),
    alpha: float = typer.Option(32.0),
    dropout: float = typer.Option(0.05),
    epochs: int = typer.Option(1),
    max_steps: int | None = typer.Option(None, help="optimiser steps in all, at most"),
    learning_rate: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(8, help="examples per forward pass"),
    grad_accum: int = typer.Option(1, help="forward passes per optimiser step (effective batch = batch-size x grad-accum)"),
    gradient_checkpointing: bool = typer.Option(False, help="recompute activations in backward: less memory, ~30% slower"),
    checkpoint_every: int = typer.Option(20, help="steps between resumable checkpoints (also at each epoch end)"),
    restart: bool = typer.Option(False, help="ignore a checkpoint left by an interrupted run and start over"),
    heldout: float = typer.Option(0.1, help="share of examples held out for validation loss/perplexity"),
    seed: int = typer.Option(0),
    device: str | None = DeviceOpt,
    quantize: str | None = typer.Option(None, help="4bit or 8bit (bitsandbytes, CUDA only; elsewhere a note and full precision)"),
) -> None:
    """Train a persona adapter (LoRA on the attention projections, loss on the answers only).

    An interrupted run is checkpointed beside the adapter folder; running the
    same command again goes on from the last checkpoint."""
    from ..lora import LoRATrainConfig, adapter_defaults, adapter_target, train_adapter  # noqa: PLC0415

    target = adapter_target(name, out_dir)
    settings: dict[str, Any] = {
        "rank": rank,
        "alpha": alpha,
        "dropout": dropout,
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "grad_accum": grad_accum,
        "gradient_checkpointing": gradient_checkpointing,
        "checkpoint_every": checkpoint_every,
    }
    LoRATrainConfig(**settings)  # bad values are refused before the model loads
    backbone = _common._load(model, device, None, None, quantize)
    config = LoRATrainConfig(**{**vars(adapter_defaults(backbone)), **settings})
    card = train_adapter(backbone, data, name, target, config, heldout, resume=not restart)
    out.print(f"data: {card['data_report']}")
    for m in card["metrics"]:
        out.print(f"epoch {m['epoch']}: train loss {m['train_loss']:.3f}, validation loss {m['val_loss']:.3f}, perplexity {m['val_perplexity']:.2f}")
    out.print(f"adapter written to {target}")


@adapter_app.command("list")
def adapter_list(folder: Path | None = typer.Option(None, help="registry folder [default: $PERSONACTL_ADAPTERS]")) -> None:
    """Adapters in the registry with their base model and last validation perplexity."""
    from ..lora import list_adapters, registry_dir  # noqa: PLC0415

    table = Table("name", "base model", "examples", "val perplexity", "path", title=str(folder or registry_dir()))
    for c in list_adapters(folder):
        last = c.get("metrics", [{}])[-1] if c.get("metrics") else {}
        table.add_row(
            c.get("name", "?"), c.get("base_model", "?"), str(c.get("n_train", "?")), f"{last.get('val_perplexity', float('nan')):.2f}", c["path"]
        )
    out.print(table)


@adapter_app.command("show")
def adapter_show(name: str = typer.Argument(..., help="registry name or adapter folder")) -> None:
    """Print an adapter's persona card as JSON."""
    from ..lora import read_card, resolve_adapter  # noqa: PLC0415

    print(json.dumps(read_card(resolve_adapter(name)), indent=2))


@adapter_app.command("evaluate")
def adapter_evaluate(
    name: str = typer.Argument(..., help="registry name or adapter folder"),
    data: Path = typer.Option(..., help="the JSONL the adapter was trained on (its held-out part is evaluated)"),
    model: str = ModelOpt,
    judge: str | None = typer.Option(None, help="also score adherence with an LLM judge and a persona rubric: openai:MODEL or local:MODEL"),
    description: str | None = typer.Option(None, help="the persona in words, for the LLM judge's rubric"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Persona adherence (embedding classifier, 0-100; optionally an LLM judge) with and without the adapter,
    held-out persona perplexity, and perplexity drift on neutral text."""
    from ..lora import adherence, resolve_adapter  # noqa: PLC0415

    result = adherence(_common._load(model, None, None, None), resolve_adapter(name), data, judge_spec=judge, description=description)
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
    from ..lora import blend_adapters  # noqa: PLC0415

    blend, folder = blend_adapters(weights, name)
    out.print(f"blend (rank {blend.rank}) written to {folder}")


@app.command()
def chat(
    model: str = ModelOpt,
    adapter: str | None = typer.Option(None, help="persona adapter to start with (registry name or folder)"),
    vector: Path | None = typer.Option(None, help="persona vector to steer with from the start"),
    coef: float = typer.Option(1.5, help="coefficient for --vector"),
    layer: int | None = typer.Option(None, help="layer for --vector [default: the run's chosen layer, else 2/3 depth]"),
    max_new_tokens: int = typer.Option(96),
    backend: str = typer.Option(
        "hf", "--backend", help="hf, or llamacpp: the GGUF model under llama.cpp (adapters as GGUF LoRAs, vectors as control vectors)"
    ),
) -> None:
    """Interactive chat: /persona NAME, /blend a=0.5,b=0.5, /vector V 1.5, /reset, /help; Ctrl-D quits."""
    from ..backends import check_backend  # noqa: PLC0415

    if check_backend(backend) == "llamacpp":
        from ..blackbox import CHAT_HELP, LlamaCppBackend, LlamaCppChat  # noqa: PLC0415

        with err.status(f"loading {model} (llama.cpp) ..."):
            session = LlamaCppChat(LlamaCppBackend(model, n_ctx=4096), max_new_tokens)
    else:
        from ..lora import CHAT_HELP, ChatSession  # noqa: PLC0415

        session = ChatSession(_common._load(model, None, None, None), max_new_tokens)  # type: ignore[assignment]
    try:
        for command in ([f"/persona {adapter}"] if adapter else []) + ([f"/vector {vector} {coef} {layer or ''}".strip()] if vector else []):
            out.print(session.handle(command), markup=False)
        out.print(CHAT_HELP, markup=False)
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
    from ..lora import merge_adapter, resolve_adapter  # noqa: PLC0415

    folder = resolve_adapter(name)
    out.print(f"standalone model written to {merge_adapter(_common._load(model, None, None, None), folder, out_dir, coef)}")


@app.command()
def screen(
    data: Path = typer.Option(..., help="JSONL of {instruction|prompt, input?, output|response} (the fine-tuning data)"),
    vector: Path = typer.Option(..., help="persona vector (.safetensors)"),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="folder for screen.jsonl, summary.json, histogram.png, screen.html and the cached model answers"
    ),
    layer: int | None = typer.Option(None, help="layer to project at (default: the vector's run's layer, else 2/3 of the depth)"),
    answers: Path | None = typer.Option(None, help="cache of the model's own answers to share between datasets [default: OUT/model_answers.jsonl]"),
    filter_out: float | None = typer.Option(None, help="percent of the most trait-inducing samples to drop (with --write)"),
    write: Path | None = typer.Option(None, help="write the dataset without the --filter-out samples here (every other line as it is)"),
    model: str = ModelOpt,
    max_new_tokens: int = typer.Option(64, help="length of the model's own answers"),
    batch_size: int = typer.Option(64, min=1, help="prompts generated together (CPU: 64 is ~1.7x faster than 16; lower it if memory runs out)"),
    device: str | None = DeviceOpt,
) -> None:
    """Before fine-tuning: which samples pull the model toward a trait (dataset answer vs the model's own, projected)."""
    from .._io import check_replaceable  # noqa: PLC0415
    from ..lora import default_layer, read_persona_records  # noqa: PLC0415
    from ..screening import ANSWERS, SCREEN, AnswerCache, unscored_note, write_screening, write_without  # noqa: PLC0415
    from ..screening import screen as run_screen
    from ..vectors import load_vector  # noqa: PLC0415

    if (filter_out is None) != (write is None):
        raise OptionError("--filter-out PCT and --write FILE go together")
    if filter_out is not None and not 0 < filter_out < 100:
        raise OptionError(f"--filter-out {filter_out}: give a percentage between 0 and 100")
    if write is not None and write.resolve() == data.resolve():
        raise OptionError(f"--write {write} is the --data file itself: give a new file for the filtered dataset")
    check_replaceable(out_dir, (SCREEN, ANSWERS))
    examples = read_persona_records(data)
    backbone = _common._load(model, device, None, None)
    persona = load_vector(vector, backbone=backbone)
    cache = AnswerCache(answers or out_dir / ANSWERS)
    result = run_screen(
        backbone,
        examples,
        persona,
        layer if layer is not None else default_layer(vector, backbone.n_layers, lowest=1),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        cache=cache,
    )
    summary = result.summary
    low, high = summary["mean_difference_ci"]
    if low is not None:
        out.print(
            f"{summary['trait']} at layer {summary['layer']}: mean projection difference {summary['mean_difference']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] over {summary['scored']} of {summary['n']} samples ({summary['prompts']} prompts; "
            f"{100 * summary['positive_share']:.0f}% above the model's own answer)"
        )
    if (note := unscored_note(result)) is not None:
        out.print(note)
    out.print(f"verdict: {summary['conclusion']}")
    out.print(f"written to {write_screening(result, out_dir)} (screen.jsonl, summary.json, histogram.png, screen.html)")
    if write is not None and filter_out is not None:  # both or neither, checked above
        removed = {result.rows[i]["line"] for i in result.flagged(filter_out)}
        out.print(
            f"{len(removed)} flagged samples dropped (lines {', '.join(map(str, sorted(removed)))}); every other line of "
            f"{data} written as it is to {write_without(data, removed, write)}"
        )
