"""`personactl bench`: every method on one budget, for each trait the model expresses; a killed bench resumes.

For each trait: extract the vector on the first extraction questions and judge whether the model expresses the trait
at all (experiment.prepare); skip it if not. Then tune every method's strength on the remaining extraction questions
(`tuning.choose`), and score each method once, at its strength, on the evaluation questions, with the same seeds
for every method (common random numbers) and one judge. Folder layout (BENCH = --out):

    BENCH/config.json            the bench config; a resumed bench must match it
    BENCH/<trait>/               the trait's run folder: vector, extraction answers, judge, layers (experiment.prepare)
    BENCH/<trait>/status.json    benched or skipped, with the expressibility verdict and the methods left out
    BENCH/<trait>/setup.json     seconds of each set-up step (extraction and judge, layer choice, adapter training)
    BENCH/<trait>/tune.jsonl     every method at every strength on the tuning questions
    BENCH/<trait>/choices.json   the strength each method is scored at
    BENCH/<trait>/score.jsonl    every method once, at its strength, on the evaluation questions
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from ..blackbox.fewshot import fewshot_messages
from ..errors import BenchError, PersonactlError
from ..evaluate import Condition, GroupRunner, LocalRunner, ResultsFile, SweepConfig, batch_conditions, claim_config, judged_records, validate_config
from ..experiment import Prepared, RunnerFactory, choose_layers, prepare
from ..expressibility import Expressibility
from ..extraction import usable_pairs
from ..generation import Prompt, chat_prompt, format_prompts
from ..judges.base import Judges
from ..layer_selection import LayerSpec
from ..lora.adapters import adapter_defaults, train_adapter
from ..lora.direction import PERSONA
from ..methods import GenerationSettings, MethodContext, PromptMethod, SteeringMethod, make_method
from ..models import Backbone, load_model
from ..progress import note, progress_bar
from ..steering import StepPositions
from ..traits import Trait, load_trait
from .config import BenchConfig
from .entries import ENTRIES, Entry, strengths
from .leaderboard import combined_score
from .tuning import Choice, choose

MIN_TUNING_QUESTIONS = 3
POSITIONS: StepPositions = "response"  # steer the last prompt token and every new one, as persona_vectors does


@dataclass
class TraitBench:
    """One trait's bench: skipped (with why), or every method's choice, scored records and costs."""

    trait: str
    status: str  # "benched" or "skipped"
    reason: str  # why it was skipped, starting with the trait's name ("" when benched)
    expressibility: Expressibility | None
    choices: dict[str, Choice] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # method -> why it could not run here


@dataclass
class BenchResult:
    out_dir: Path
    config: BenchConfig
    traits: list[TraitBench]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for t in self.traits for r in t.records]


class SetupTimes:
    """Seconds of each set-up step, kept in setup.json so a resumed bench still reports what the first run paid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if step not in self.seconds:
            self.seconds[step] = time.perf_counter() - started
            write_text_atomic(self.path, json.dumps(self.seconds, indent=2))


def run_bench(config: BenchConfig, out_dir: str | Path, backbone: Backbone | None = None, runner: RunnerFactory | None = None) -> BenchResult:
    """Run (or resume) the bench `config` in `out_dir`. With a `runner` factory (e.g. `partial(RayRunner, pool)`) the
    answers are generated where it sends them; this process prepares, judges and writes every file."""
    out = Path(out_dir)
    traits = claim_bench(config, out)
    backbone = backbone or load_model(config.model)
    return BenchResult(out, config, [bench_trait(config, spec, trait, backbone, out, runner) for spec, trait in zip(config.traits, traits)])


def claim_bench(config: BenchConfig, out_dir: Path) -> list[Trait]:
    """The config's traits, after checking that each can be benched as configured and that `out_dir` is new or holds
    this same bench (nothing is loaded or generated before these checks pass)."""
    traits = [_checked_trait(name, config) for name in config.traits]
    for spec, trait in zip(config.traits, traits):
        sweep_config(config, spec, trait)
    names = [t.name for t in traits]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BenchError(f"two of the traits are named '{twice}': each trait's files go to a folder of its name; rename one")
    _check_bench_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claim_config(out_dir, "bench", config, "use another --out or delete it")
    return traits


def _check_bench_folder(out_dir: Path) -> None:
    """Refuse an --out that holds files but no bench: a bench writes a folder per trait and never into someone else's."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"--out {out_dir} is a file: give a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _holds_bench(out_dir / "config.json"):
        raise BenchError(f"--out {out_dir} holds files but no bench (no bench config.json): give a new or empty folder")


def _holds_bench(config: Path) -> bool:
    try:
        return "bench" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _checked_trait(name: str, config: BenchConfig) -> Trait:
    """The trait, refused before any model work when it cannot be benched as configured."""
    trait = load_trait(name)
    if not isinstance(trait, Trait):
        raise BenchError(f"trait '{trait.name}' has no evaluation questions: a bench needs a full trait file")
    tuning = len(trait.questions) - config.extraction_questions
    if tuning < MIN_TUNING_QUESTIONS:
        raise BenchError(
            f"trait '{trait.name}' has {len(trait.questions)} extraction questions: the bench extracts on the first "
            f"{config.extraction_questions} and tunes on the rest, which needs at least {MIN_TUNING_QUESTIONS}; "
            f"lower --extraction-questions to {len(trait.questions) - MIN_TUNING_QUESTIONS} or less"
        )
    return trait


def sweep_config(config: BenchConfig, spec: str, trait: Trait) -> SweepConfig:
    """The run folder config of `trait` (a built-in name or a file: `spec`), what experiment.prepare and the layer
    choice read."""
    return validate_config(  # a one-line error for what a sweep refuses too (say, samples > 1 at temperature 0)
        {
            "name": trait.name,
            "model": config.model,
            "trait": spec,
            "methods": ["vector"],
            "layers": ["auto", f"auto:{config.blend}"],
            "samples": config.samples,
            "n_questions": config.n_questions,
            "extraction_questions": config.extraction_questions,
            "judge": config.judge,
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "positions": POSITIONS,
        }
    )


def bench_trait(config: BenchConfig, spec: str, trait: Trait, backbone: Backbone, out: Path, runner: RunnerFactory | None) -> TraitBench:
    """One trait: prepare, tune, score (each step resumed from its files)."""
    folder = out / trait.name
    folder.mkdir(parents=True, exist_ok=True)
    setup = SetupTimes(folder / "setup.json")
    with setup.timed("extraction"):
        prep = prepare(sweep_config(config, spec, trait), out, backbone, relevance=True)
    verdict = prep.expressibility
    if not (verdict is not None and verdict.expressed) and not config.keep_unexpressed:
        reason = verdict.line() if verdict is not None else f"{trait.name}: no expressibility verdict"  # names the trait, as line() does
        _write_status(folder, "skipped", reason, verdict, {})
        note(f"skipped: {reason}")
        return TraitBench(trait.name, "skipped", reason, verdict)
    entries = [ENTRIES[label] for label in config.methods]
    ctx, layers = _method_context(config, trait, prep, entries, folder, setup)
    methods, left_out = _methods(entries, ctx)
    entries = [e for e in entries if e.label not in left_out]
    stage = _Stage(config, trait, ctx, methods, prep.judges, runner)
    tuning = trait.questions[config.extraction_questions :]
    tune_plan = {
        c: e.label
        for e in entries
        if e.goal != "baseline"
        for c in _conditions(e, _layer(e, layers), strengths(e, len(trait.instructions)), tuning, config)
    }
    tuned = stage.run("tune", folder / "tune.jsonl", tune_plan, tuning)
    choices = {e.label: choose(e, [r for r in tuned if r["method"] == e.label], config.floor) for e in entries if e.goal != "baseline"}
    write_text_atomic(folder / "choices.json", json.dumps({label: c.to_dict() for label, c in choices.items()}, indent=2))
    evaluation = trait.eval_questions[: config.n_questions]
    score_plan = {
        c: e.label
        for e in entries
        for c in _conditions(e, _layer(e, layers), (choices[e.label].coef,) if e.label in choices else e.grid, evaluation, config)
    }
    scored = stage.run("score", folder / "score.jsonl", score_plan, evaluation)
    costs = _costs(entries, choices, scored, tuned, setup.seconds, ctx, evaluation)
    _write_status(folder, "benched", "", verdict, left_out)
    return TraitBench(trait.name, "benched", "", verdict, choices, scored, costs, left_out)


def _method_context(
    config: BenchConfig, trait: Trait, prep: Prepared, entries: Sequence[Entry], folder: Path, setup: SetupTimes
) -> tuple[MethodContext, dict[str, LayerSpec]]:
    """What the methods steer with (the chosen layer and blend, the persona adapter, the extraction answers), paying
    each set-up step only if an entry needs it; and the layers the entries' "auto" and "auto:K" resolve to."""
    layers: dict[str, LayerSpec] = {}
    blends: dict[str, dict[int, float]] = {}
    if any("layers" in e.needs for e in entries):
        with setup.timed("layers"):
            _, selection = choose_layers(prep)
        assert selection is not None  # the trait's layers are "auto" and "auto:K"
        layers = {"auto": selection.chosen, "auto:K": f"auto:{config.blend}"}
        blends = {label: blend.weights for label, blend in selection.blends.items()}
    options = {"cap_at": "", "backend": "hf", "model": config.model}
    if any("adapter" in e.needs for e in entries):
        with setup.timed("adapter"):
            options["adapter"] = str(_persona_adapter(config, trait, prep.pairs, prep.backbone, folder))
    settings = GenerationSettings(config.max_new_tokens, config.temperature, config.seed, config.batch_size)
    return MethodContext(prep.backbone, trait, prep.vector, settings, POSITIONS, options, blends, prep.pairs), layers


def _layer(entry: Entry, layers: dict[str, LayerSpec]) -> LayerSpec:
    return layers[entry.layer] if isinstance(entry.layer, str) else entry.layer


def _conditions(entry: Entry, layer: LayerSpec, coefs: Sequence[float], questions: Sequence[str], config: BenchConfig) -> list[Condition]:
    return [Condition(entry.method, layer, c, q, s) for c in coefs for s in range(config.samples) for q in range(len(questions))]


def _methods(entries: Sequence[Entry], ctx: MethodContext) -> tuple[dict[str, SteeringMethod], dict[str, str]]:
    """The sweep methods the entries need, and the entries that cannot run here (say, llama.cpp not installed) with why."""
    methods: dict[str, SteeringMethod] = {}
    left_out: dict[str, str] = {}
    for entry in entries:
        if entry.method in methods:
            continue
        try:
            methods[entry.method] = make_method(entry.method, ctx)
        except (PersonactlError, ImportError) as exc:
            left_out[entry.label] = str(exc).splitlines()[0]
            note(f"{ctx.trait.name}: method '{entry.label}' left out: {left_out[entry.label]}")
    return methods, left_out


def _persona_adapter(config: BenchConfig, trait: Trait, pairs: Sequence[Any], backbone: Backbone, folder: Path) -> Path:
    """A persona LoRA trained on the trait's positive extraction answers (without their instructions); reused if there."""
    target = folder / "adapter"
    if (target / PERSONA).is_file():
        return target
    data = folder / "adapter_data.jsonl"
    rows = [{"instruction": p.question, "output": p.pos_answer} for p in usable_pairs(list(pairs), "response_avg")]
    write_text_atomic(data, "".join(json.dumps(row) + "\n" for row in rows))
    train = replace(adapter_defaults(backbone), epochs=config.adapter_epochs, learning_rate=2e-4, seed=config.seed)
    train_adapter(backbone, data, f"bench-{trait.name}", target, train)
    return target


@dataclass
class _Stage:
    """Generates, judges and appends the records of one stage (tune or score), resuming from its file."""

    config: BenchConfig
    trait: Trait
    ctx: MethodContext
    methods: dict[str, SteeringMethod]
    judges: Judges
    runner: RunnerFactory | None

    def run(self, stage: str, path: Path, plan: dict[Condition, str], questions: Sequence[str]) -> list[dict[str, Any]]:
        results = ResultsFile(path)
        todo = [c for c in plan if c.key not in results.done]
        if todo:  # a finished stage starts no runner (on Ray, no pool work)
            self._generate(stage, results, plan, todo, questions)
        keys = {c.key for c in plan}
        return [r for r in results.records if r["key"] in keys]

    def _generate(self, stage: str, results: ResultsFile, plan: dict[Condition, str], todo: list[Condition], questions: Sequence[str]) -> None:
        """Answer, judge and append `todo`, one method's rows per batch so each batch times one method."""
        groups = [
            g for label in dict.fromkeys(plan.values()) for g in batch_conditions([c for c in todo if plan[c] == label], self.config.batch_size)
        ]
        runner: GroupRunner = (
            self.runner(self.ctx, list(self.methods), list(questions), self.config.seed)
            if self.runner is not None
            else LocalRunner(self.ctx.backbone, self.methods, questions, self.config.seed)
        )
        with progress_bar(f"{self.trait.name}: {stage}", len(todo)) as advance:
            for group, generated in runner.run(groups):
                judged = judged_records(self.judges, group, [questions[c.question_id] for c in group], generated)
                share = generated.seconds / len(group)
                results.append([bench_record(r, self.trait.name, plan[c], stage, share) for r, c in zip(judged, group)])
                advance(len(group))


def bench_record(judged: dict[str, Any], trait: str, label: str, stage: str, seconds: float) -> dict[str, Any]:
    """A sweep record as the bench keeps it: the trait's name, the bench method, the three scores and their combination."""
    record = {**judged, "trait": trait, "method": label, "sweep_method": judged["method"], "stage": stage, "seconds": seconds}
    record["trait_score"] = judged["trait"]
    record["relevance"] = judged.get("relevance")
    record["combined"] = combined_score(record["trait_score"], record["coherence"], record["relevance"])
    return record


def _costs(
    entries: Sequence[Entry],
    choices: dict[str, Choice],
    scored: Sequence[dict[str, Any]],
    tuned: Sequence[dict[str, Any]],
    setup: dict[str, float],
    ctx: MethodContext,
    questions: Sequence[str],
) -> dict[str, dict[str, float | None]]:
    """Per method: extra prompt tokens over the plain prompt, tokens per second relative to the plain model, and the
    seconds of set-up (its share of extraction, layer choice and training, plus its tuning generations)."""
    plain = _prompt_tokens(ctx, ENTRIES["none"], questions, 0.0)
    speed = {e.label: _tokens_per_second([r for r in scored if r["method"] == e.label]) for e in entries}
    costs: dict[str, dict[str, float | None]] = {}
    for e in entries:
        coef = choices[e.label].coef if e.label in choices else 0.0
        extra = [a - b for a, b in zip(_prompt_tokens(ctx, e, questions, coef), plain)]
        base, own = speed.get("none"), speed[e.label]
        costs[e.label] = {
            "extra_prompt_tokens": sum(extra) / len(extra),
            "tokens_per_s": own,
            "relative_speed": own / base if own is not None and base else None,
            "setup_s": sum(setup.get(step, 0.0) for step in e.needs) + sum(r["seconds"] for r in tuned if r["method"] == e.label),
        }
    return costs


def _prompt_tokens(ctx: MethodContext, entry: Entry, questions: Sequence[str], coef: float) -> list[int]:
    """Prompt length in tokens of each question as `entry` sends it at `coef` (system instruction, shots, or none)."""
    prompts: list[Prompt]
    if entry.method == "prompt" and isinstance(ctx.trait, Trait):
        prompts = [chat_prompt(q, PromptMethod.instruction(ctx.trait, coef)) for q in questions]
    elif entry.method == "fewshot":
        prompts = list(fewshot_messages(ctx.pairs, questions, [coef] * len(questions)))
    else:
        prompts = [chat_prompt(q) for q in questions]
    return [len(ids) for ids in ctx.backbone.encode(format_prompts(ctx.backbone, prompts))]


def _tokens_per_second(records: Sequence[dict[str, Any]]) -> float | None:
    seconds = sum(r["seconds"] for r in records)
    return sum(r["n_tokens"] for r in records) / seconds if seconds > 0 else None


def count_records(out_dir: str | Path) -> int:
    """Records a bench folder holds (tuning and scoring, every trait): what an interrupted bench keeps."""
    return sum(len(ResultsFile(path).records) for path in Path(out_dir).glob("*/*.jsonl") if path.stem in ("tune", "score"))


def _write_status(folder: Path, status: str, reason: str, verdict: Expressibility | None, left_out: dict[str, str]) -> None:
    data = {"status": status, "reason": reason, "expressibility": verdict.to_dict() if verdict else None, "left_out": left_out}
    write_text_atomic(folder / "status.json", json.dumps(data, indent=2))
