"""Sweeps: methods x layers x coefficients x evaluation questions x samples, judged.

A sweep is a list of independent records keyed by their condition. Records are
appended to `runs/<name>/results.jsonl` and flushed one batch at a time, so a
killed run resumes where it stopped and never writes a key twice. The summary
per condition (mean trait, mean coherence, collapse rate, each with a
95% CI over questions, intervals.py) goes to `summary.csv`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ._io import write_text_atomic
from .errors import PersonactlError, first_validation_error
from .generation import chat_prompt, format_prompts, record_seed
from .intervals import mean_ci
from .judges.base import Judges
from .judges.text import perplexity, text_metrics
from .layer_selection import LayerSpec, blend_size
from .methods import GenerationSettings, SteeringMethod
from .models import Backbone
from .progress import progress_bar


class SweepError(PersonactlError):
    """A sweep that cannot run or resume as asked."""


class SweepConfig(BaseModel):
    """Everything that defines a sweep; a resumed run must match it."""

    name: str = Field("sweep", pattern=r"^[\w.-]+$", description="run folder name under the output dir")
    model: str = "smollm2-135m"
    trait: str = "pirate"
    vector: str | None = Field(None, description="persona vector file; extracted when absent")
    lora: str | None = Field(None, description="persona direction folder for method 'lora' (personactl lora extract)")
    adapter: str | None = Field(None, description="persona adapter (registry name or folder) for method 'adapter'")
    cap_at: str | None = Field(None, description="range for method 'cap' (capping.parse_cap_at; default neg-p90)")
    methods: list[str] = Field(default_factory=lambda: ["vector"], min_length=1)
    layers: list[int | str] | str = Field(
        "auto", description="layers: ints, 'auto' (the best measured layer) and 'auto:K' (the top K blended), alone or in a list"
    )
    coefs: list[float] = Field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0], min_length=1)
    samples: int = Field(1, ge=1, description="answers per (question, condition)")
    n_questions: int | None = Field(None, ge=1, description="first N evaluation questions (default: all)")
    extraction_questions: int | None = Field(None, ge=1, description="first N extraction questions when extracting (default: all)")
    judge: str = "embed"
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    seed: int = 0
    batch_size: int = Field(32, ge=1)
    positions: Literal["all", "prompt", "response"] = "all"
    backend: str = Field("hf", description="where API methods generate: hf (local), or openai:MODEL (modulation, api-prompt, fewshot)")

    @field_validator("layers")
    @classmethod
    def _layer_specs(cls, value: list[int | str] | str) -> list[int | str] | str:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("give at least one layer, 'auto' or 'auto:K'")
        checked: list[int | str] = []
        for item in items:
            if isinstance(item, str) and item.strip().isdigit():
                item = int(item)
            if isinstance(item, str):
                item = item.strip()
                k = blend_size(item)
                if item != "auto" and k is None:
                    raise ValueError(f"'{item}' is not a layer, 'auto' or 'auto:K' (e.g. auto:3)")
                if k is not None and k < 1:
                    raise ValueError(f"'{item}' blends no layers: K must be at least 1")
            checked.append(item)
        single = checked[0]
        return single if isinstance(value, str) and isinstance(single, str) else checked  # "7" alone is the list [7]

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        from .backends import parse_backend  # noqa: PLC0415

        kind, model = parse_backend(value)  # raises BackendError (one line), not a ValueError
        return kind if not model else f"{kind}:{model}"

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> SweepConfig:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs --temperature > 0 (greedy answers would repeat)")
        return self

    def generation(self) -> GenerationSettings:
        return GenerationSettings(self.max_new_tokens, self.temperature, self.seed, self.batch_size)


def validate_config(data: dict[str, Any]) -> SweepConfig:
    """SweepConfig from a mapping, with a one-line error."""
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise SweepError(f"invalid sweep config: {first_validation_error(exc)}") from exc


@dataclass(frozen=True)
class Condition:
    """One row to generate: a question under one method, layer, coefficient and sample."""

    method: str
    layer: LayerSpec  # an int, or a blend's label such as "auto:3"
    coef: float
    question_id: int
    sample: int

    @property
    def key(self) -> str:
        return f"{self.method}|L{self.layer}|c{self.coef:g}|q{self.question_id}|s{self.sample}"

    def seed(self, run_seed: int) -> int:
        """The sampling seed of this row: one per (question, sample), shared by every method, layer and
        coefficient, so conditions differ by their steering and not by their dice (common random numbers)."""
        return record_seed(run_seed, f"q{self.question_id}", f"s{self.sample}")


def plan(config: SweepConfig, methods: Sequence[SteeringMethod], layers: Sequence[LayerSpec], n_questions: int) -> list[Condition]:
    """Every condition of the sweep, grouped so that one (method, layer) shares batches."""
    rows: list[Condition] = []
    for method in methods:
        for layer in layers if method.uses_layers else [0]:
            for sample in range(config.samples):
                for q in range(n_questions):
                    rows.extend(Condition(method.name, layer, c, q, sample) for c in config.coefs)
    return rows


class ResultsFile:
    """Append-only JSONL of records; tolerates (and trims) a line cut by a kill."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):  # the last line was cut mid-write: drop it
            with open(self.path, "r+b") as fh:
                fh.truncate(len(complete))
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                self.records.append(json.loads(line))

    @property
    def done(self) -> set[str]:
        return {r["key"] for r in self.records}

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        self.records.extend(records)


@dataclass
class Generated:
    """The model's side of a group of records: answers, with their perplexity under the unsteered model and their length,
    and the seconds the method took to generate them (perplexity excluded), for cost per token."""

    answers: list[str]
    perplexities: list[float | None]
    n_tokens: list[int]
    seconds: float = 0.0


def generate_group(
    backbone: Backbone, methods: dict[str, SteeringMethod], questions: Sequence[str], group: Sequence[Condition], run_seed: int
) -> Generated:
    """Answer one group of conditions (same method and layer, one coefficient and seed per row) and measure the answers."""
    qs = [questions[c.question_id] for c in group]
    started = time.perf_counter()
    answers = methods[group[0].method].generate(qs, [c.coef for c in group], group[0].layer, [c.seed(run_seed) for c in group])
    seconds = time.perf_counter() - started
    ppl = perplexity(backbone, format_prompts(backbone, [chat_prompt(q) for q in qs]), answers)
    return Generated(answers, ppl, [len(ids) for ids in backbone.encode(answers)], seconds)


class GroupRunner(Protocol):
    """Where a sweep's groups are generated: in this process, or spread over workers (`personactl.scaleout`).
    `run` yields each group's result as it finishes, in any order."""

    def run(self, groups: Sequence[list[Condition]]) -> Iterator[tuple[list[Condition], Generated]]: ...


@dataclass
class LocalRunner:
    """Generate every group in this process, in order."""

    backbone: Backbone
    methods: dict[str, SteeringMethod]
    questions: Sequence[str]
    run_seed: int

    def run(self, groups: Sequence[list[Condition]]) -> Iterator[tuple[list[Condition], Generated]]:
        for group in groups:
            yield group, generate_group(self.backbone, self.methods, self.questions, group, self.run_seed)


def pending_groups(
    config: SweepConfig, methods: Sequence[SteeringMethod], layers: Sequence[LayerSpec], n_questions: int, done: set[str]
) -> list[list[Condition]]:
    """The batches of conditions not yet in results.jsonl, each one (method, layer), at most `config.batch_size` rows."""
    todo = [c for c in plan(config, methods, layers, n_questions) if c.key not in done]
    return list(batch_conditions(todo, config.batch_size))


def run_sweep(
    config: SweepConfig,
    backbone: Backbone,
    methods: Sequence[SteeringMethod],
    layers: Sequence[LayerSpec],
    questions: Sequence[str],
    judges: Judges,
    run_dir: Path,
    runner: GroupRunner | None = None,
) -> list[dict[str, Any]]:
    """Generate (with `runner`, default this process), judge and append every missing record; returns all records of the run.

    This process is the only writer of results.jsonl, whichever runner generates."""
    claim_run_dir(config, run_dir)
    results = ResultsFile(run_dir / "results.jsonl")
    groups = pending_groups(config, methods, layers, len(questions), results.done)
    runner = runner or LocalRunner(backbone, {m.name: m for m in methods}, questions, config.seed)
    with progress_bar(f"sweep {config.name}", sum(map(len, groups))) as advance:
        for group, generated in runner.run(groups):
            results.append(judged_records(judges, group, [questions[c.question_id] for c in group], generated))
            advance(len(group))
    write_summary(results.records, run_dir / "summary.csv")
    return results.records


def claim_run_dir(config: SweepConfig, run_dir: Path) -> None:
    """Write config.json, or check that a run being resumed had the same config."""
    claim_config(run_dir, "sweep", config, "use another --name/--out or delete it")


def claim_config(folder: Path, section: str, config: BaseModel, advice: str) -> None:
    """Write `config` as `section` of folder/config.json, or refuse (SweepError) a folder whose `section` differs, so a
    resumed run never mixes records of two configs. A field added since the folder was written counts as its default."""
    path = folder / "config.json"
    wanted = config.model_dump()
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    found = data.get(section)
    if found is None:
        write_text_atomic(path, json.dumps({**data, section: wanted}, indent=2))
        return
    found = {**{k: f.default for k, f in type(config).model_fields.items() if k not in found}, **found}
    if found != wanted:
        diff = sorted(k for k in wanted if found.get(k) != wanted[k])
        raise SweepError(f"{folder} holds a {section} with another config ({', '.join(diff)} differ): {advice}")


def batch_conditions(conditions: Sequence[Condition], size: int) -> Iterator[list[Condition]]:
    """Consecutive runs of the same (method, layer), at most `size` long (rows carry their own seeds)."""
    group: list[Condition] = []
    for c in conditions:
        if group and ((c.method, c.layer) != (group[0].method, group[0].layer) or len(group) == size):
            yield group
            group = []
        group.append(c)
    if group:
        yield group


def judged_records(judges: Judges, group: Sequence[Condition], qs: Sequence[str], generated: Generated) -> list[dict[str, Any]]:
    """The records of one generated group, with trait and coherence scores, and relevance where `judges` has a
    relevance judge (records without one keep their old keys)."""
    answers = generated.answers
    trait = judges.trait.score(qs, answers)
    coherence = judges.coherence.score(qs, answers)
    relevance = None if judges.relevance is None else judges.relevance.score(qs, answers)
    records = []
    for i, (c, q, a, t, coh, p, n) in enumerate(zip(group, qs, answers, trait, coherence, generated.perplexities, generated.n_tokens)):
        record: dict[str, Any] = {
            "key": c.key,
            "method": c.method,
            "layer": c.layer,
            "coef": c.coef,
            "question_id": c.question_id,
            "question": q,
            "sample": c.sample,
            "answer": a,
            "trait": t,
            "coherence": coh,
            "perplexity": p,
            "collapsed": text_metrics(a).collapsed,
            "n_tokens": n,
        }
        if relevance is not None:
            record["relevance"] = relevance[i]
        records.append(record)
    return records


def layer_order(layer: Any) -> tuple[int, float, str]:
    """Sort key for a record's layer: none first, then layer indices, then blends ('auto:2' before 'auto:10')."""
    if layer is None:
        return (0, 0.0, "")
    if isinstance(layer, (int, float)):
        return (1, float(layer), "")
    k = blend_size(str(layer))
    return (2, float(k if k is not None else 0), str(layer))


SCORE_RANGE = (0.0, 100.0)  # judges score 0-100
SUMMARY_FIELDS = [
    "method",
    "layer",
    "coef",
    "n",
    "trait_mean",
    "trait_lo",
    "trait_hi",
    "trait_scored",
    "coherence_mean",
    "coherence_lo",
    "coherence_hi",
    "coherence_scored",
    "collapse_rate",
    "collapse_lo",
    "collapse_hi",
    "perplexity_mean",
]


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, layer, coef): means over questions (samples averaged first) with 95% CIs over questions.

    A function of the set of records: they are put in key order first, so a Ray sweep's completion order and a
    one-process run give the same rows.
    """
    groups: dict[tuple[str, LayerSpec, float], list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: str(r["key"])):
        groups.setdefault((r["method"], r["layer"], r["coef"]), []).append(r)
    rows = []
    for (method, layer, coef), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], layer_order(kv[0][1]), kv[0][2])):
        questions = [r["question_id"] for r in recs]
        trait = mean_ci([r["trait"] for r in recs], questions, bounds=SCORE_RANGE)
        coherence = mean_ci([r["coherence"] for r in recs], questions, bounds=SCORE_RANGE)
        collapse = mean_ci([float(r["collapsed"]) for r in recs], questions, bounds=(0.0, 1.0))
        ppl = [r["perplexity"] for r in recs if r["perplexity"] is not None]
        rows.append(
            {
                "method": method,
                "layer": layer,
                "coef": coef,
                "n": len(recs),
                "trait_mean": trait[0],
                "trait_lo": trait[1],
                "trait_hi": trait[2],
                "trait_scored": sum(r["trait"] is not None for r in recs),
                "coherence_mean": coherence[0],
                "coherence_lo": coherence[1],
                "coherence_hi": coherence[2],
                "coherence_scored": sum(r["coherence"] is not None for r in recs),
                "collapse_rate": collapse[0],
                "collapse_lo": collapse[1],
                "collapse_hi": collapse[2],
                "perplexity_mean": float(np.mean(ppl)) if ppl else float("nan"),
            }
        )
    return rows


def write_summary(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """summary.csv (atomic), one row per condition."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    for row in summarize(records):
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())
