"""Custom traits extracted while the server keeps serving: bounded in size and number, cancellable, progress polled.

An extraction never holds the model for long. Its contrastive answers are
low-priority engine jobs (they take only rows no request is waiting for, and
decode in the same steps as everyone else); its activation capture runs a few
pairs at a time between decode steps (`Engine.call`). Cancelling stops both.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated

import torch
from pydantic import BaseModel, Field, StringConstraints, field_validator

from .. import activations
from ..errors import PersonactlError
from ..extraction import ExtractionSettings, pair_prompts, pairs_from_answers, usable_pairs, vector_from_activations
from ..traits import InstructionPair, TraitSketch
from .engine import DoneEvent, Engine, ErrorEvent, Job, QueueFull, TokenEvent
from .personas import UnknownPersona, check_name

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
SETTINGS = ExtractionSettings(max_new_tokens=32)
CAPTURE_PAIRS = 4  # pairs captured per engine call: short enough that requests wait at most a few forward passes


class ExtractionRefused(PersonactlError):
    """A custom trait this server will not extract (too large, or too many already written)."""


class ExtractRequest(BaseModel):
    """A custom trait from the web page: instructions that show it, instructions that do not, and questions to ask."""

    name: str
    description: str = Field("", max_length=500)
    positive: list[Line] = Field(min_length=1, max_length=10)
    negative: list[Line] = Field(min_length=1, max_length=10)
    questions: list[Line] = Field(min_length=2, max_length=20)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        try:
            return check_name(value)
        except UnknownPersona as exc:
            raise ValueError(str(exc)) from exc

    def sketch(self) -> TraitSketch:
        """Instruction pairs: each positive with a negative (the shorter list repeats)."""
        count = max(len(self.positive), len(self.negative))
        pairs = [InstructionPair(pos=self.positive[i % len(self.positive)], neg=self.negative[i % len(self.negative)]) for i in range(count)]
        return TraitSketch(name=self.name, description=self.description, instructions=pairs, questions=self.questions)

    def answers(self) -> int:
        """Contrastive pairs it asks for (instruction pairs x questions)."""
        return max(len(self.positive), len(self.negative)) * len(self.questions)


@dataclass
class JobState:
    job: str
    name: str
    status: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0
    message: str = "waiting for the model"
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Cancelled(Exception):
    """The job was cancelled while it ran."""


class Extractions:
    """At most `limit` unfinished jobs; each runs on its own thread and uses the model only through the engine."""

    def __init__(self, engine: Engine, limit: int = 2) -> None:
        self.engine, self.limit = engine, limit
        self.jobs: dict[str, JobState] = {}
        self._stops: dict[str, threading.Event] = {}
        self._written = 0
        self._guard = threading.Lock()

    def submit(self, request: ExtractRequest) -> JobState:
        settings = self.engine.settings
        if request.answers() > settings.max_extract_answers:
            raise ExtractionRefused(
                f"{request.answers()} instruction pairs x questions: this server extracts at most "
                f"{settings.max_extract_answers} (fewer questions or instructions)"
            )
        with self._guard:
            if request.name in self.engine.library.vector_names() or any(
                j.name == request.name and j.status in ("queued", "running", "done") for j in self.jobs.values()
            ):
                raise UnknownPersona(f"a persona vector named '{request.name}' already exists: choose another name")
            started = self._written + sum(j.status in ("queued", "running") for j in self.jobs.values())
            if started >= settings.max_custom_vectors:
                raise ExtractionRefused(
                    f"this server has made its {settings.max_custom_vectors} custom traits (max_custom_vectors): "
                    "restart it with a higher cap to make more"
                )
            if sum(j.status in ("queued", "running") for j in self.jobs.values()) >= self.limit:
                raise QueueFull(f"{self.limit} extractions are already running: retry when one finishes")
            state = JobState(uuid.uuid4().hex[:12], request.name)
            self.jobs[state.job], self._stops[state.job] = state, threading.Event()
        threading.Thread(target=self._run, args=(state, request), name=f"extract-{request.name}", daemon=True).start()
        return state

    def cancel(self, job: str) -> JobState:
        """Stop a queued or running job (its answers leave the engine at the next step); a finished job is unchanged."""
        state = self.jobs[job]
        if state.status in ("queued", "running"):
            self._stops[job].set()
            state.status, state.message = "cancelled", "cancelled"
        return state

    def _run(self, state: JobState, request: ExtractRequest) -> None:
        stop = self._stops[state.job]
        try:
            state.status, state.message = "running", "generating contrastive answers"
            keys, pos_prompts, neg_prompts = pair_prompts(self.engine.backbone, request.sketch(), SETTINGS)
            answers = self._answers(state, pos_prompts + neg_prompts, stop)
            pairs = usable_pairs(pairs_from_answers(keys, pos_prompts, neg_prompts, answers), SETTINGS.positions)
            if not pairs:
                raise PersonactlError("every answer was empty: the model did not answer these questions")
            state.message = "capturing activations"
            pos, neg = self._capture(state, pairs, stop)
            vector = vector_from_activations(self.engine.backbone, pos, neg, trait=request.name, method=SETTINGS.method, positions=SETTINGS.positions)
            with self._guard:
                if stop.is_set():
                    raise Cancelled
                self.engine.library.add_vector(request.name, vector)
                self._written += 1
            state.status, state.progress, state.message = "done", 1.0, f"'{request.name}' is ready"
        except Cancelled:
            state.status, state.message = "cancelled", "cancelled"
        except Exception as exc:  # noqa: BLE001 - reported through the job, the server keeps running
            state.status, state.message = "failed", "extraction failed"
            state.error = str(exc) if isinstance(exc, PersonactlError) else type(exc).__name__

    def _answers(self, state: JobState, prompts: list[str], stop: threading.Event) -> list[str]:
        """Greedy answers to `prompts`, generated as low-priority engine jobs (80% of the progress)."""
        texts: list[list[str]] = [[] for _ in prompts]
        finished = threading.Semaphore(0)
        jobs = []
        for k, prompt in enumerate(prompts):

            def emit(event: object, k: int = k) -> None:
                if isinstance(event, TokenEvent):
                    texts[k].append(event.text)
                elif isinstance(event, (DoneEvent, ErrorEvent)):
                    if isinstance(event, ErrorEvent):
                        texts[k] = [""]
                    finished.release()

            jobs.append(Job(prompt, SETTINGS.max_new_tokens, emit=emit))
            self.engine.submit_background(jobs[-1])
        try:
            for done in range(1, len(prompts) + 1):
                while not finished.acquire(timeout=0.1):
                    if stop.is_set():
                        raise Cancelled
                state.progress = round(0.8 * done / len(prompts), 3)
        finally:
            for job in jobs:
                job.cancelled.set()
        return ["".join(parts).strip() for parts in texts]

    def _capture(self, state: JobState, pairs: list, stop: threading.Event) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced activations of both sides, CAPTURE_PAIRS pairs per engine call (the last 20% of the progress)."""
        pos, neg = [], []
        for start in range(0, len(pairs), CAPTURE_PAIRS):
            if stop.is_set():
                raise Cancelled
            chunk = pairs[start : start + CAPTURE_PAIRS]
            prompts = [p.pos_prompt for p in chunk] + [p.neg_prompt for p in chunk]
            responses = [p.pos_answer for p in chunk] + [p.neg_answer for p in chunk]
            collect = partial(
                activations.collect,
                self.engine.backbone,
                prompts,
                responses,
                positions=activations.checked_positions(SETTINGS.positions),
                batch_size=len(prompts),
            )
            acts = self.engine.call(collect)
            pos.append(acts[: len(chunk)])
            neg.append(acts[len(chunk) :])
            state.progress = round(0.8 + 0.2 * min(start + CAPTURE_PAIRS, len(pairs)) / len(pairs), 3)
        return torch.cat(pos), torch.cat(neg)
