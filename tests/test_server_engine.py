"""The continuous-batching engine, driven directly (no HTTP): requests join and leave a running batch and get
exactly the answer they would get alone; one request's failure, cancellation or persona never reaches another."""

from __future__ import annotations

import threading

import pytest
from conftest import TINY_ARCHS, random_vectors, tiny_backbone

from personactl.server import Engine, PersonaLibrary, ServerSettings
from personactl.server.engine import BadJob, DoneEvent, ErrorEvent, Job, TokenEvent
from personactl.server.personas import PersonaRequest

QUESTIONS = ["hello there", "what is up?", "tell me a story about the sea", "hi", "why is the sky blue, in one line?"]


class Waiter:
    """Collects one job's events; `wait` returns them once the job ended."""

    def __init__(self) -> None:
        self.events: list = []
        self.ended = threading.Event()
        self.on_token = None

    def __call__(self, event) -> None:
        self.events.append(event)
        if isinstance(event, TokenEvent) and self.on_token is not None:
            self.on_token(self)
        if isinstance(event, (DoneEvent, ErrorEvent)):
            self.ended.set()

    def wait(self) -> list:
        assert self.ended.wait(120), "the job never ended"
        return self.events

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TokenEvent))

    @property
    def done(self) -> DoneEvent | ErrorEvent:
        return self.events[-1]


@pytest.fixture
def engine_for(tmp_path):
    engines: list[Engine] = []

    def make(arch: str = "llama", **settings) -> Engine:
        backbone = tiny_backbone(arch)
        random_vectors(tmp_path, ("rand", "other"), backbone.hidden_size, backbone.n_layers + 1)
        engine = Engine(backbone, PersonaLibrary(backbone, tmp_path), ServerSettings(vectors=tmp_path, **settings))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def _job(engine: Engine, question: str, max_tokens: int = 12, **kw) -> tuple[Job, Waiter]:
    waiter = Waiter()
    return Job(engine.backbone.chat([{"role": "user", "content": question}]), max_tokens, emit=waiter, **kw), waiter


def _alone(engine: Engine, question: str, **kw) -> Waiter:
    job, waiter = _job(engine, question, **kw)
    engine.submit(job)
    waiter.wait()
    return waiter


def _persona(coef: float, name: str = "rand", layer: int = 2, meter: bool = False) -> PersonaRequest:
    return PersonaRequest(vectors=[{"name": name, "coef": coef, "layers": [layer]}], meter=meter)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_requests_joining_a_running_batch_get_the_answer_they_get_alone(engine_for, arch):
    """Each request joins while the others are mid-answer (different prompt lengths, coefficients, budgets)."""
    engine = engine_for(arch)
    asks = [dict(question=q, max_tokens=6 + 3 * i, persona=_persona(float(i))) for i, q in enumerate(QUESTIONS)]
    alone = [_alone(engine, **ask).text for ask in asks]
    waiters: list[Waiter] = []

    def submit_next(_waiter: Waiter) -> None:  # the next request arrives when the previous one has 2 tokens
        if len(waiters) < len(asks) and sum(isinstance(e, TokenEvent) for e in waiters[-1].events) == 2:
            job, waiter = _job(engine, **asks[len(waiters)])
            waiter.on_token = submit_next
            waiters.append(waiter)
            engine.submit(job)

    first, waiter = _job(engine, **asks[0])
    waiter.on_token = submit_next
    waiters.append(waiter)
    engine.submit(first)
    for waiter in waiters:
        waiter.wait()
    assert len(waiters) == len(asks)
    assert [w.text for w in waiters] == alone
    assert len(set(alone)) > 1


@pytest.mark.parametrize("scheduling", ["continuous", "static"])
def test_a_short_request_finishes_while_a_long_one_is_still_running(engine_for, scheduling):
    """Continuous batching lets the short one join; static batching (the old engine, kept for benchmarks) makes it wait."""
    engine = engine_for(max_tokens=512, scheduling=scheduling)
    long_job, long = _job(engine, QUESTIONS[2], max_tokens=200)
    engine.submit(long_job)
    while not long.events:  # the long answer has started
        threading.Event().wait(0.005)
    short_job, short = _job(engine, QUESTIONS[3], max_tokens=2)
    engine.submit(short_job)
    short.wait()
    assert long.ended.is_set() == (scheduling == "static")  # continuous: it joined the running batch instead of waiting
    long.wait()
    assert isinstance(short.done, DoneEvent) and (long.done.finish_reason, long.done.completion_tokens) == ("length", 200)


def test_a_request_that_fails_fails_alone(engine_for):
    """A seed no generator takes (2**64) fails its own prefill; the requests it shared the prefill with are unharmed."""
    engine = engine_for(batch_window_s=0.2)
    good = [dict(question=q, temperature=1.0, seed=7 + i) for i, q in enumerate(QUESTIONS[:3])]
    alone = [_alone(engine, **ask).text for ask in good]
    jobs = [_job(engine, **ask) for ask in good] + [_job(engine, QUESTIONS[0], temperature=1.0, seed=2**64)]
    with engine.lock:  # all four wait, so they are prefilled together
        for job, _ in jobs:
            engine.submit(job)
    for _, waiter in jobs:
        waiter.wait()
    assert [w.text for _, w in jobs[:3]] == alone
    assert all(isinstance(w.done, DoneEvent) for _, w in jobs[:3])
    assert isinstance(jobs[3][1].done, ErrorEvent) and jobs[3][1].done.status == 500


def test_a_cancelled_request_leaves_the_batch(engine_for):
    engine = engine_for(max_tokens=512)
    job, waiter = _job(engine, QUESTIONS[2], max_tokens=400)
    waiter.on_token = lambda w: job.cancelled.set() if len(w.events) == 3 else None
    engine.submit(job)
    while not job.cancelled.is_set():
        threading.Event().wait(0.005)
    steps = engine.steps
    while engine.active():
        threading.Event().wait(0.005)
    assert engine.steps - steps <= 2  # dropped at the next step, not after 400 tokens
    assert len(waiter.events) <= 4 and not waiter.ended.is_set()


def test_stop_strings_end_the_answer_before_them(engine_for):
    engine = engine_for()
    full = _alone(engine, QUESTIONS[2], max_tokens=20).text
    stop = full[5:8]
    assert stop and full.index(stop) >= 1
    stopped = _alone(engine, QUESTIONS[2], max_tokens=20, stop=("never appears", stop))
    assert stopped.text == full[: full.index(stop)] and stopped.done.finish_reason == "stop"


def test_the_meter_reads_the_answer_not_the_injected_vector(engine_for):
    """At the steered layer the first token's meter is read before this request's steering: equal at coef 0 and 4."""
    engine = engine_for()
    plain, steered = (_alone(engine, QUESTIONS[0], persona=_persona(c, meter=True)) for c in (0.0, 4.0))
    assert plain.text != steered.text  # coef 4 does steer
    first = [next(e for e in w.events if isinstance(e, TokenEvent)) for w in (plain, steered)]
    assert first[0].meter["rand"] == pytest.approx(first[1].meter["rand"], abs=1e-4)


def test_each_response_carries_only_its_own_meters(engine_for):
    engine = engine_for(batch_window_s=0.2)
    mine, theirs = (
        _job(engine, QUESTIONS[0], persona=_persona(2.0, "rand", meter=True)),
        _job(engine, QUESTIONS[1], persona=_persona(2.0, "other", meter=True)),
    )
    with engine.lock:
        engine.submit(mine[0])
        engine.submit(theirs[0])
    meters = [{k for e in w.wait() if isinstance(e, TokenEvent) for k in e.meter} for _, w in (mine, theirs)]
    assert meters == [{"rand"}, {"other"}]


def test_a_prompt_past_the_context_is_refused_before_it_queues(engine_for):
    engine = engine_for(max_prompt_tokens=64)
    with pytest.raises(BadJob, match="at most 64"):
        engine.submit(_job(engine, "x" * 200)[0])
    context = engine.context
    with pytest.raises(BadJob, match="context"):
        engine.submit(_job(engine, "hi", max_tokens=context)[0])
    assert engine.queue.empty()


def _cap(at: str, layers=(1, 2, 3)) -> PersonaRequest:
    return PersonaRequest(cap=[{"name": "rand", "at": at, "layers": list(layers)}], positions="all")


def test_a_cap_nothing_leaves_changes_nothing_and_a_tight_one_changes_only_its_own_row(engine_for):
    engine = engine_for(batch_window_s=0.2)
    plain = [_alone(engine, q).text for q in QUESTIONS]
    assert [_alone(engine, q, persona=_cap("-1e9:1e9")).text for q in QUESTIONS] == plain
    tight = [_alone(engine, q, persona=_cap("-0.01:0.01")).text for q in QUESTIONS]
    assert tight != plain
    jobs = [_job(engine, q, persona=_cap("-0.01:0.01") if i % 2 else None) for i, q in enumerate(QUESTIONS)]
    with engine.lock:  # prefilled together: capped and plain rows share the batch
        for job, _ in jobs:
            engine.submit(job)
    assert [w.wait() and w.text for _, w in jobs] == [tight[i] if i % 2 else plain[i] for i in range(len(QUESTIONS))]
