"""What the workers run: a sweep's groups of records, and whole trait extractions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluate import Condition, Generated, generate_group
from ..extraction import ContrastivePair, ExtractionSettings, extract
from ..methods import MethodContext, make_method
from ..models import Backbone
from ..traits import AnyTrait
from ..vectors import PersonaVector
from .pool import WorkerPool


@dataclass
class SweepSpec:
    """Everything a worker needs to rebuild a run's steering methods around its own model."""

    methods: list[str]
    context: dict[str, Any]  # the MethodContext's fields but its backbone: each worker brings its own
    questions: list[str]
    run_seed: int
    key: str  # the worker builds the methods once per key


def sweep_group(backbone: Backbone, memo: dict[str, Any], group: list[Condition], spec: SweepSpec) -> Generated:
    """One group of a sweep (same method and layer), answered and measured on this worker's model."""
    methods = memo.get(spec.key)
    if methods is None:
        context = MethodContext(backbone=backbone, **spec.context)
        methods = memo[spec.key] = {name: make_method(name, context) for name in spec.methods}
    return generate_group(backbone, methods, spec.questions, group, spec.run_seed)


def describe_group(group: Sequence[Condition]) -> str:
    """The records of a group, by key, for an error message."""
    return f"records {group[0].key}" + (f" .. {group[-1].key} ({len(group)})" if len(group) > 1 else "")


class RayRunner:
    """A sweep's GroupRunner on a WorkerPool: the groups spread over the actors, results back as they finish."""

    def __init__(self, pool: WorkerPool, context: MethodContext, methods: Sequence[str], questions: Sequence[str], run_seed: int) -> None:
        self.pool = pool
        unbound = {name: value for name, value in vars(context).items() if name != "backbone"}
        self.spec = SweepSpec(list(methods), unbound, list(questions), run_seed, uuid.uuid4().hex)

    def run(self, groups: Sequence[list[Condition]]) -> Iterator[tuple[list[Condition], Generated]]:
        spec = self.pool.ray.put(self.spec)  # sent once per worker, not once per group
        for index, generated in self.pool.map(sweep_group, groups, spec, label=describe_group):
            yield groups[index], generated


def extract_task(
    backbone: Backbone, memo: dict[str, Any], trait: AnyTrait, settings: ExtractionSettings
) -> tuple[PersonaVector, list[ContrastivePair]]:
    return extract(backbone, trait, settings)


def extract_traits(
    pool: WorkerPool, traits: Sequence[AnyTrait], settings: ExtractionSettings
) -> Iterator[tuple[AnyTrait, PersonaVector, list[ContrastivePair]]]:
    """Extract every trait's vector on the pool, one trait per task; yields (trait, vector, pairs) as each finishes."""
    for index, (vector, pairs) in pool.map(extract_task, traits, settings, label=lambda t: f"trait '{t.name}'"):
        yield traits[index], vector, pairs
