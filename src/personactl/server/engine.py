"""The serving engine: requests from many clients run as one batched, steered generate, streamed back row by row.

Requests that can share a forward pass (same adapter, positions and sampling
settings) are grouped; each persona vector becomes one steering term with a
coefficient per row (0 for rows that do not use it), so 16 clients with 16
coefficients cost one batch. Tokens, their log-probabilities and the trait
meter reach each client through its own callback as they are generated.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..errors import PersonactlError
from ..extraction import stored_projections
from ..generation import generate
from ..lora.adapters import PersonaSwitcher
from ..lora.direction import LoRADirection, merged
from ..models import Backbone
from ..steering import SteeringTerm
from ..vectors import PersonaVector
from .personas import PersonaLibrary, PersonaRequest
from .settings import ServerSettings


class QueueFull(PersonactlError):
    """Too many requests are waiting; the client should retry later."""


@dataclass
class TokenEvent:
    text: str  # new text of the answer (may be empty while a multi-byte character is incomplete)
    token_id: int
    logprob: Optional[float] = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, log-probability), most likely first
    meter: dict[str, float] = field(default_factory=dict)  # this request's metered vectors only


@dataclass
class DoneEvent:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ErrorEvent:
    message: str
    status: int = 500  # the HTTP status it deserves: 400 when the request itself is at fault


@dataclass
class Job:
    """One request's generation: a formatted prompt, its limits, its persona, and where its events go."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    persona: Optional[PersonaRequest] = None
    top_logprobs: Optional[int] = None  # None: no log-probabilities
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings
    emit: Callable[[object], None] = lambda _event: None  # set by whoever waits for the events
    cancelled: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one forward pass."""
        persona = self.persona or PersonaRequest()
        return (json.dumps(persona.adapter, sort_keys=True), persona.positions, self.temperature, self.top_p)


class _Rows(BaseStreamer, StoppingCriteria):
    """Per-row streaming and stopping: decodes each row's new tokens, emits them, and ends rows at EOS or their budget."""

    def __init__(self, backbone: Backbone, jobs: list[Job], observer: "_Logprobs", meter: "_Meter") -> None:
        self.backbone, self.jobs, self.observer, self.meter = backbone, jobs, observer, meter
        self.ids: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.finished = torch.zeros(len(jobs), dtype=torch.bool)
        self.prompt_started = False
        self.eos = set(_eos_ids(backbone))

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_started:  # the first call carries the prompt
            self.prompt_started = True
            return
        tokens = value.reshape(-1).tolist()
        for row, (job, token) in enumerate(zip(self.jobs, tokens)):
            if self.finished[row]:
                continue
            if token in self.eos:
                self._finish(row, "stop")
                continue
            self.ids[row].append(token)
            text = self.backbone.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            new = "" if text.endswith("\ufffd") else text[len(self.sent[row]):]
            self.sent[row] += new
            job.emit(TokenEvent(new, token, *self.observer.read(row, token, job.top_logprobs),
                                meter=self.meter.read(row)))
            if len(self.ids[row]) >= job.max_tokens or job.cancelled.is_set():
                self._finish(row, "length")

    def _finish(self, row: int, reason: str) -> None:
        self.finished[row] = True
        job = self.jobs[row]
        job.emit(DoneEvent(reason, len(self.backbone.encode([job.prompt])[0]), len(self.ids[row])))

    def end(self) -> None:
        for row in range(len(self.jobs)):
            if not self.finished[row]:
                self._finish(row, "length")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return self.finished.to(input_ids.device).clone()


class _Logprobs(LogitsProcessor):
    """Keeps the log-softmax of each step's raw logits (before sampling), when any row asked for log-probabilities."""

    def __init__(self, backbone: Backbone, wanted: bool) -> None:
        self.backbone, self.wanted, self.last = backbone, wanted, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.wanted:
            self.last = torch.log_softmax(scores.float(), dim=-1).cpu()
        return scores

    def read(self, row: int, token: int, top: Optional[int]) -> tuple[Optional[float], list[tuple[int, float]]]:
        if top is None or self.last is None:
            return None, []
        values, ids = self.last[row].topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
        return float(self.last[row, token]), [(int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist())]


class _Meter:
    """Projection of the hidden state that chose each token onto each metered vector (before any steering at that layer).

    When the vector kept its extraction projections, the value is rescaled so that 0 lies midway between the
    trait and non-trait answers and +1 / -1 are their means: comparable across layers and vectors.
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}

    def read(self, row: int) -> dict[str, float]:
        return {name: float(v[row]) for name, v in self.values.items() if row < len(v)}

    @contextmanager
    def hooks(self, backbone: Backbone, specs: dict[str, tuple[int, PersonaVector]]) -> Iterator[None]:
        handles = []
        try:
            for name, (layer, vector) in specs.items():
                unit, (middle, half_gap) = vector.unit(layer), _meter_scale(vector, layer)

                def record(_module, _inputs, output, name=name, unit=unit, middle=middle, half_gap=half_gap) -> None:
                    hidden = output[0] if isinstance(output, tuple) else output
                    self.values[name] = ((hidden[:, -1].float() @ unit.to(hidden.device) - middle) / half_gap).cpu()
                handles.append(backbone.block(layer).register_forward_hook(record))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _meter_scale(vector: PersonaVector, layer: int) -> tuple[float, float]:
    """(midpoint, half the gap) of the mean trait and non-trait projections at `layer`; (0, 1) when not stored."""
    stored = stored_projections(vector)
    if stored is None or layer not in stored[0]:
        return 0.0, 1.0
    column = stored[0].index(layer)
    pos, neg = float(stored[1][:, column].mean()), float(stored[2][:, column].mean())
    return (pos + neg) / 2, (abs(pos - neg) / 2) or 1.0


def _eos_ids(backbone: Backbone) -> list[int]:
    eos = getattr(backbone.model.generation_config, "eos_token_id", None) or backbone.tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


class Engine:
    """A worker thread that batches queued jobs and runs them; `submit` never blocks (QueueFull when full)."""

    def __init__(self, backbone: Backbone, library: PersonaLibrary, settings: ServerSettings) -> None:
        self.backbone, self.library, self.settings = backbone, library, settings
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.queue_size)
        self.switcher = PersonaSwitcher(backbone)
        self.lock = threading.Lock()  # one generate at a time (jobs also run outside the worker: extraction)
        self.batches = 0  # generate calls so far (a batch serves several requests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personactl-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full as exc:
            raise QueueFull(f"{self.settings.queue_size} requests are already waiting: retry shortly") from exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.switcher.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            time.sleep(self.settings.batch_window_s)  # let concurrent requests arrive and share the batch
            jobs = [first]
            while True:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                if not job.cancelled.is_set():
                    groups.setdefault(job.batch_key(), []).append(job)
            for group in groups.values():
                for start in range(0, len(group), self.settings.max_batch):
                    self.run(group[start : start + self.settings.max_batch])

    def run(self, jobs: list[Job]) -> None:
        """Generate for jobs that share a batch key; every job gets its tokens and a DoneEvent, or an ErrorEvent."""
        try:
            with self.lock, ExitStack() as stack:
                self._adapter(stack, (jobs[0].persona or PersonaRequest()).adapter)
                steering, meter_specs = self._steering(jobs)
                observer, meter = _Logprobs(self.backbone, any(j.top_logprobs is not None for j in jobs)), _Meter()
                rows = _Rows(self.backbone, jobs, observer, meter)
                self.batches += 1
                stack.enter_context(meter.hooks(self.backbone, meter_specs))
                generate(self.backbone, [j.prompt for j in jobs], steering=steering, max_new_tokens=max(j.max_tokens for j in jobs),
                         temperature=jobs[0].temperature, top_p=jobs[0].top_p, seeds=[j.seed for j in jobs], batch_size=len(jobs),
                         streamer=rows, observers=[observer], stopping=[rows])
        except Exception as exc:  # noqa: BLE001 - reported to every waiting client, the server keeps running
            message = str(exc) if isinstance(exc, PersonactlError) else f"generation failed: {type(exc).__name__}"
            for job in jobs:
                job.emit(ErrorEvent(message, 400 if "persona" in message or "adapter" in message else 500))

    def _adapter(self, stack: ExitStack, adapter: object) -> None:
        if isinstance(adapter, str):
            if adapter not in (self.switcher.model.peft_config if self.switcher.model is not None else {}):
                self.switcher.load(adapter, self.library.adapter_path(adapter))
            self.switcher.use(adapter)
            stack.callback(self.switcher.use, None)
        elif isinstance(adapter, dict):
            terms = [(LoRADirection.load(self.library.adapter_path(n)), w) for n, w in adapter["blend"].items()]
            stack.enter_context(merged(self.backbone, *terms))

    def _steering(self, jobs: list[Job]) -> tuple[list[SteeringTerm], dict[str, tuple[int, PersonaVector]]]:
        """One term per (vector, layers) with a coefficient per row; the meter reads each metered vector at its first layer."""
        coefs: dict[tuple[str, tuple[int, ...]], list[float]] = {}
        meter: dict[str, tuple[int, PersonaVector]] = {}
        for row, job in enumerate(jobs):
            persona = job.persona or PersonaRequest()
            for use in persona.vectors:
                layers = tuple(use.layers or [self.library.layer(use.name)])
                coefs.setdefault((use.name, layers), [0.0] * len(jobs))[row] += use.coef
                if persona.meter:
                    meter.setdefault(use.name, (layers[0], self.library.vector(use.name)))
        positions = (jobs[0].persona or PersonaRequest()).positions
        terms = [SteeringTerm(self.library.vector(name), list(layers), values, positions=positions) for (name, layers), values in coefs.items()]
        return terms, meter
