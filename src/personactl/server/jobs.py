"""Background extraction of custom traits: bounded in number, progress polled, the vector usable by name when done."""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Annotated, Optional

from pydantic import BaseModel, Field, StringConstraints, field_validator

from ..extraction import ExtractionSettings, extract
from ..progress import reporting_to
from ..traits import InstructionPair, TraitSketch
from .engine import Engine, QueueFull
from .personas import UnknownPersona, check_name



Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


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


@dataclass
class JobState:
    job: str
    name: str
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    message: str = "waiting for the model"
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


class Extractions:
    """At most `limit` unfinished jobs; each runs on its own thread and holds the model while it works."""

    def __init__(self, engine: Engine, limit: int = 2) -> None:
        self.engine, self.limit = engine, limit
        self.jobs: dict[str, JobState] = {}
        self._guard = threading.Lock()

    def submit(self, request: ExtractRequest) -> JobState:
        with self._guard:
            if request.name in self.engine.library.vector_names() or any(j.name == request.name and j.status != "failed" for j in self.jobs.values()):
                raise UnknownPersona(f"a persona vector named '{request.name}' already exists: choose another name")
            if sum(j.status in ("queued", "running") for j in self.jobs.values()) >= self.limit:
                raise QueueFull(f"{self.limit} extractions are already running: retry when one finishes")
            state = JobState(uuid.uuid4().hex[:12], request.name)
            self.jobs[state.job] = state
        threading.Thread(target=self._run, args=(state, request), name=f"extract-{request.name}", daemon=True).start()
        return state

    def _run(self, state: JobState, request: ExtractRequest) -> None:
        def report(description: str, done: int, total: int) -> None:
            start, span = (0.0, 0.8) if description.startswith("generating") else (0.8, 0.2)  # answers, then the capture
            state.progress = round(start + span * done / max(total, 1), 3)
            state.message = description

        try:
            with self.engine.lock, reporting_to(report):
                state.status, state.message = "running", "generating contrastive answers"
                vector, _ = extract(self.engine.backbone, request.sketch(), ExtractionSettings(max_new_tokens=32))
            self.engine.library.add_vector(request.name, vector)
            state.status, state.progress, state.message = "done", 1.0, f"'{request.name}' is ready"
        except Exception as exc:  # noqa: BLE001 - reported through the job, the server keeps running
            state.status, state.error, state.message = "failed", f"{type(exc).__name__}: {exc}", "extraction failed"
