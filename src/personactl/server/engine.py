"""The serving engine: continuous batching with a persona per request.

Requests join the running batch between decode steps and leave it when they
end, so a short request is not held behind long ones. A request is prefilled on
its own (with whatever joined in the same instant), then its KV cache rows are
appended to the batch (`kv.join`); every decode step is one forward pass over
all rows, each with its own steering coefficients (0 for vectors it does not
use), sampler, stop strings and token budget. Rows whose client left, or that
ended, are dropped from the cache at once (`kv.keep_rows`).

Why not transformers' `ContinuousBatchingManager`: it packs every request's
tokens into one flat sequence over a paged cache, and which token belongs to
which request lives in its scheduler's private state. Steering hooks, the trait
meter and per-request samplers need exactly that map at every block, so the
engine schedules rows itself over an ordinary KV cache instead, where row i of
the batch is request i.

Requests with different adapters cannot share weights: each adapter (or blend)
has its own batch ("cohort"), stepped in turn. Background work (custom-trait
extraction) runs between decode steps at low priority: its generations take
only spare rows, its other model calls run one small piece per step (`call`).
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ..activations import make_batch, position_ids
from ..capping import cap_term
from ..errors import PersonactlError
from ..generation import eos_ids
from ..lora import LoRADirection, PersonaSwitcher, merged
from ..models import Backbone
from ..monitor import stored_projections
from ..steering import SteeringTerm, StepPositions, steer
from ..vectors import PersonaVector
from . import kv
from .personas import CapUse, PersonaLibrary, PersonaRequest, VectorUse
from .rows import Row, Use
from .settings import ServerSettings

T = TypeVar("T")


class QueueFull(PersonactlError):
    """Too many requests are waiting; the client should retry later."""


class BadJob(PersonactlError):
    """A request the engine cannot run as asked (e.g. a prompt longer than the model's context)."""


@dataclass
class TokenEvent:
    text: str  # new text of the answer (empty while a character or a possible stop string is incomplete)
    token_id: int
    logprob: float | None = None
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
    persona: PersonaRequest | None = None
    top_logprobs: int | None = None  # None: no log-probabilities
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings
    emit: Callable[[TokenEvent | DoneEvent | ErrorEvent], None] = lambda _event: None  # set by whoever waits for the events
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0  # counted by the engine when the job is submitted
    background: bool = False  # low-priority work (set by submit_background)

    def adapter_key(self) -> str:
        """Jobs with equal keys run on the same weights and can share a batch."""
        return json.dumps((self.persona or PersonaRequest()).adapter, sort_keys=True)


@dataclass
class _Cohort:
    """Rows that share weights (one adapter or blend), their KV cache, attention mask and next input tokens."""

    adapter: str
    cache: kv.DynamicCache
    mask: torch.Tensor
    rows: list[Row] = field(default_factory=list)
    next_tokens: list[int] = field(default_factory=list)


class Engine:
    """A worker thread that runs every admitted request one decode step at a time; `submit` never blocks."""

    def __init__(self, backbone: Backbone, library: PersonaLibrary, settings: ServerSettings) -> None:
        self.backbone, self.library, self.settings = backbone, library, settings
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.queue_size)
        self.switcher = PersonaSwitcher(backbone)
        self.lock = threading.Lock()  # held during every model call
        self.steps = 0  # forward passes so far (each serves every row of its batch)
        self.context = int(getattr(backbone.model.config, "max_position_embeddings", 0) or 0) or None
        self._eos = eos_ids(backbone)
        self._waiting: deque[Job] = deque()  # taken from the queue, waiting for a free row
        self._background: deque[Job] = deque()
        self._calls: queue.Queue[tuple[Callable[[], object], Future]] = queue.Queue()
        self._cohorts: dict[str, _Cohort] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personactl-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a request (QueueFull when the queue is full, BadJob when it cannot run)."""
        self._check(job)
        try:
            self.queue.put_nowait(job)
        except queue.Full as exc:
            raise QueueFull(f"{self.settings.queue_size} requests are already waiting: retry shortly") from exc

    def submit_background(self, job: Job) -> None:
        """Queue low-priority work: it takes only rows no request is waiting for."""
        self._check(job)
        job.background = True
        self._background.append(job)

    def call(self, work: Callable[[], T]) -> T:
        """Run `work` on the engine thread between two decode steps (a short piece of background model work)."""
        future: Future = Future()
        self._calls.put((work, future))
        return future.result()

    def active(self) -> int:
        """Rows decoding now."""
        return sum(len(c.rows) for c in self._cohorts.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.switcher.close()

    def _check(self, job: Job) -> None:
        job.prompt_tokens = len(self.backbone.encode([job.prompt])[0])
        limit = min(self.settings.max_prompt_tokens, self.context or self.settings.max_prompt_tokens)
        if job.prompt_tokens > limit:
            raise BadJob(f"the prompt is {job.prompt_tokens} tokens: this server takes at most {limit}")
        if self.context and job.prompt_tokens + job.max_tokens > self.context:
            raise BadJob(
                f"{job.prompt_tokens} prompt tokens + max_tokens {job.max_tokens} is over the model's context of "
                f"{self.context}: lower max_tokens or shorten the prompt"
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._admit()
                for cohort in list(self._cohorts.values()):
                    self._decode(cohort)
                self._run_call()
            except Exception as exc:  # noqa: BLE001 - an engine bug fails the running rows, never the server
                for cohort in list(self._cohorts.values()):
                    for row in cohort.rows:
                        _fail(row.job, exc)
                self._cohorts.clear()

    def _admit(self) -> None:
        """Move waiting requests (then background work) into free rows and prefill them."""
        idle = not self._cohorts and self._calls.empty()
        try:
            self._waiting.append(self.queue.get(timeout=0.05) if idle else self.queue.get_nowait())
            if idle:
                self._sleep(self.settings.batch_window_s)  # let concurrent requests arrive and share the prefill
            while True:
                self._waiting.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        free = self.settings.max_batch - self.active()
        if self.settings.scheduling == "static" and self._cohorts:
            free = 0  # the running batch finishes before new requests start (the baseline continuous batching replaces)
        admitted: list[Job] = []
        while self._waiting and free > len(admitted):
            job = self._waiting.popleft()
            if not job.cancelled.is_set():
                admitted.append(job)
        background_rows = max(1, self.settings.max_batch // 2) - sum(r.job.background for c in self._cohorts.values() for r in c.rows)
        while self._background and not self._waiting and free > len(admitted) and background_rows > 0:
            job = self._background.popleft()
            if not job.cancelled.is_set():
                admitted.append(job)
                background_rows -= 1
        groups: dict[str, list[Job]] = {}
        for job in admitted:
            groups.setdefault(job.adapter_key(), []).append(job)
        for key, jobs in groups.items():
            self._prefill(key, jobs)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _prefill(self, key: str, jobs: list[Job]) -> None:
        """Run the prompts of `jobs` (one forward), choose their first tokens and add them to their cohort.

        If the shared prefill fails, each job is tried alone, so only the request at fault gets the error.
        """
        try:
            self._prefill_together(key, jobs)
        except Exception as exc:  # noqa: BLE001 - isolated below, reported to the request at fault
            if len(jobs) == 1:
                _fail(jobs[0], exc)
                return
            for job in jobs:
                try:
                    self._prefill_together(key, [job])
                except Exception as alone:  # noqa: BLE001 - this request's own error
                    _fail(job, alone)

    def _prefill_together(self, key: str, jobs: list[Job]) -> None:
        rows = [Row(job, self.backbone.tokenizer, self._eos, *self._resolved(job)) for job in jobs]
        batch = make_batch(self.backbone, [job.prompt for job in jobs])
        ids, mask = batch.input_ids.to(self.backbone.device), batch.attention_mask.to(self.backbone.device)
        cache = kv.new_cache()
        logits, meters = self._forward(key, rows, ids=ids, mask=mask, positions=position_ids(mask), cache=cache)
        cohort = self._cohorts.get(key)
        if cohort is not None and cohort.rows:
            cohort.mask = kv.join(cohort.cache, cohort.mask, cache, mask)
        else:
            cohort = _Cohort(key, cache, mask)
        cohort.rows += rows
        cohort.next_tokens += [0] * len(rows)
        self._cohorts[key] = cohort
        first = len(cohort.rows) - len(rows)
        self._advance(cohort, logits, meters, first)

    def _decode(self, cohort: _Cohort) -> None:
        """One step for every row of `cohort`: feed each row's last token, choose its next."""
        self._drop(cohort, [i for i, row in enumerate(cohort.rows) if row.job.cancelled.is_set()])
        if not cohort.rows:
            return
        ids = torch.tensor(cohort.next_tokens, device=self.backbone.device)[:, None]
        positions = cohort.mask.long().sum(1, keepdim=True)
        mask = torch.cat([cohort.mask, cohort.mask.new_ones(len(cohort.rows), 1)], dim=1)
        try:
            logits, meters = self._forward(cohort.adapter, cohort.rows, ids=ids, mask=mask, positions=positions, cache=cohort.cache)
        except Exception as exc:  # noqa: BLE001 - the batch's rows cannot go on; the server does
            for row in cohort.rows:
                _fail(row.job, exc)
            self._drop(cohort, list(range(len(cohort.rows))))
            return
        cohort.mask = mask
        self._advance(cohort, logits, meters, 0)

    def _advance(self, cohort: _Cohort, logits: torch.Tensor, meters: dict[tuple[str, int], torch.Tensor], first: int) -> None:
        """Choose, record and send the next token of cohort rows `first`.. (logits row k is cohort row first + k); drop the rows that ended."""
        wanted = any(row.job.top_logprobs is not None for row in cohort.rows[first:])
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu() if wanted else None
        ended = []
        for k, row in enumerate(cohort.rows[first:]):
            i, job = first + k, row.job
            try:
                token = row.choose(logits[k])
                text = row.feed(token)
            except Exception as exc:  # noqa: BLE001 - this row's own failure
                _fail(job, exc)
                ended.append(i)
                continue
            if token not in self._eos or text:
                job.emit(
                    TokenEvent(
                        text,
                        token,
                        *_top(logprobs, k, token, job.top_logprobs),
                        meter={name: float(meters[(name, layer)][k]) for name, layer in row.meters},
                    )
                )
            cohort.next_tokens[i] = token
            if row.finish_reason is not None:
                job.emit(DoneEvent(row.finish_reason, job.prompt_tokens, len(row.ids)))
                ended.append(i)
        self._drop(cohort, ended)

    def _drop(self, cohort: _Cohort, ended: list[int]) -> None:
        if not ended:
            return
        keep = [i for i in range(len(cohort.rows)) if i not in set(ended)]
        if not keep:
            cohort.rows, cohort.next_tokens = [], []
            self._cohorts.pop(cohort.adapter, None)
            return
        cohort.mask = kv.keep_rows(cohort.cache, cohort.mask, keep)
        cohort.rows = [cohort.rows[i] for i in keep]
        cohort.next_tokens = [cohort.next_tokens[i] for i in keep]

    def _run_call(self) -> None:
        try:
            work, future = self._calls.get_nowait()
        except queue.Empty:
            return
        try:
            with self.lock:
                future.set_result(work())
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)

    @torch.no_grad()
    def _forward(
        self, adapter: str, rows: list[Row], *, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object
    ) -> tuple[torch.Tensor, dict[tuple[str, int], torch.Tensor]]:
        """Last-position logits [rows, vocab] and meter readings of one forward pass with every row's own steering."""
        meter: dict[tuple[str, int], torch.Tensor] = {}
        with self.lock, ExitStack() as stack:
            self._adapter(stack, json.loads(adapter))
            stack.enter_context(steer(self.backbone, *self._steering(rows)))
            stack.enter_context(self._meter_hooks(rows, meter))  # entered last: reads each block before the steering there
            out = self.backbone.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
            self.steps += 1
        return out.logits[:, -1], meter

    def _adapter(self, stack: ExitStack, adapter: object) -> None:
        if isinstance(adapter, str):
            if adapter not in (self.switcher.model.peft_config if self.switcher.model is not None else {}):
                self.switcher.load(adapter, self.library.adapter_path(adapter))
            self.switcher.use(adapter)
            stack.callback(self.switcher.use, None)
        elif isinstance(adapter, dict):
            terms = [(LoRADirection.load(self.library.adapter_path(n)), w) for n, w in adapter["blend"].items()]
            stack.enter_context(merged(self.backbone, *terms))

    def _resolved(self, job: Job) -> tuple[list[Use], list[tuple[str, int]]]:
        """The job's vectors and caps as Uses, the recommended layer read (from disk) once, at admission, not at
        every step; and the (vector, layer) pairs it meters: each one at its first layer."""
        persona = job.persona or PersonaRequest()

        def layers(use: VectorUse | CapUse) -> tuple[int, ...]:
            return tuple(use.layers or [self.library.layer(use.name)])

        uses = [Use(use.name, layers(use), persona.positions, use.coef) for use in persona.vectors]
        uses += [Use(cap.name, layers(cap), persona.positions, 1.0, cap.at) for cap in persona.cap]
        return uses, [(use.name, use.layers[0]) for use in uses] if persona.meter else []

    def _steering(self, rows: list[Row]) -> list[SteeringTerm]:
        """One term per (vector, layers, positions, cap range), with a coefficient per row (0 where a row does not
        use it: for a cap, 0 is no cap)."""
        coefs: dict[tuple[str, tuple[int, ...], StepPositions, str | None], list[float]] = {}
        for i, row in enumerate(rows):
            for use in row.uses:
                coefs.setdefault((use.name, use.layers, use.positions, use.cap_at), [0.0] * len(rows))[i] += use.coef
        return [
            SteeringTerm(self.library.vector(name), list(layers), values, positions=positions)
            if cap_at is None
            else cap_term(self.library.vector(name), list(layers), cap_at, values, positions)
            for (name, layers, positions, cap_at), values in coefs.items()
        ]

    @contextmanager
    def _meter_hooks(self, rows: list[Row], values: dict[tuple[str, int], torch.Tensor]) -> Iterator[None]:
        """Record, for every metered (vector, layer), each row's last-position projection, read before steering at that layer."""
        handles = []
        try:
            for name, layer in sorted({spec for row in rows for spec in row.meters}):
                vector = self.library.vector(name)
                unit, (middle, half_gap) = vector.unit(layer), _meter_scale(vector, layer)

                def record(
                    _module: torch.nn.Module,
                    _inputs: Any,
                    output: Any,
                    key: tuple[str, int] = (name, layer),
                    unit: torch.Tensor = unit,
                    middle: float = middle,
                    half_gap: float = half_gap,
                ) -> None:
                    hidden = output[0] if isinstance(output, tuple) else output
                    values[key] = ((hidden[:, -1].float() @ unit.to(hidden.device) - middle) / half_gap).cpu()

                handles.append(self.backbone.block(layer).register_forward_hook(record, prepend=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _top(logprobs: torch.Tensor | None, row: int, token: int, top: int | None) -> tuple[float | None, list[tuple[int, float]]]:
    """The chosen token's log-probability and the `top` most likely (token id, log-probability) of one row."""
    if top is None or logprobs is None:
        return None, []
    values, ids = logprobs[row].topk(top) if top else (torch.empty(0), torch.empty(0, dtype=torch.long))
    return float(logprobs[row, token]), [(int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist())]


def _fail(job: Job, exc: BaseException) -> None:
    """Tell one request why it failed: its own message when the error is a user's, a generic one otherwise."""
    if isinstance(exc, PersonactlError):
        job.emit(ErrorEvent(str(exc), 400))
    else:
        job.emit(ErrorEvent(f"generation failed: {type(exc).__name__}", 500))


def _meter_scale(vector: PersonaVector, layer: int) -> tuple[float, float]:
    """(midpoint, half the gap) of the mean trait and non-trait projections at `layer`; (0, 1) when not stored.

    The meter is then 0 midway between the trait and non-trait answers, and +1 / -1 at their means: comparable
    across layers and vectors.
    """
    stored = stored_projections(vector)
    if stored is None or layer not in stored[0]:
        return 0.0, 1.0
    column = stored[0].index(layer)
    pos, neg = float(stored[1][:, column].mean()), float(stored[2][:, column].mean())
    return (pos + neg) / 2, (abs(pos - neg) / 2) or 1.0
