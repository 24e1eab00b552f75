"""A pool of Ray actors, each holding one loaded model, that work through a list of items and survive dead actors.

Each actor loads the model once (`ModelWorker`), then runs module-level task
functions `fn(backbone, memo, *args)` on it; `memo` is the actor's own dict for
what a task builds once (a run's steering methods). `WorkerPool.map` keeps two
items in flight per actor and yields results as they finish. An actor that dies
(killed, out of memory, its node lost) has its unfinished items re-queued to
the others, or to a replacement when none is left, and the user reads one line
naming the worker and those items (Ray's own multi-line report is not shown:
see cluster.connect); an item that raises in a task stops the map with an
error naming it.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PersonactlError
from .cluster import ClusterLost, ScaleoutError, answers, import_ray

PLACEMENT_WAIT_S = 10.0  # for resources of actors ended just before to be released
IN_FLIGHT = 2  # items queued per actor: the next one is ready when the current one ends
MAX_ATTEMPTS = 3  # times an item is handed out before a dying actor is blamed on the item


class ModelWorker:
    """One model, loaded once in this actor's process."""

    def __init__(self, model: str, threads: int | None, device: str | None) -> None:
        import torch  # noqa: PLC0415

        from ..models import load_model  # noqa: PLC0415

        os.environ["PERSONACTL_PROGRESS"] = "0"  # the driver shows the progress
        if threads:
            torch.set_num_threads(threads)
        self.backbone = load_model(model, device=device)
        self.memo: dict[str, Any] = {}

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.backbone, self.memo, *args)

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> str:
        """'pid 4242 on 10.0.0.5': how the user finds this worker in the cluster."""
        import ray  # noqa: PLC0415

        return f"pid {os.getpid()} on {ray.util.get_node_ip_address()}"


@dataclass
class PoolSettings:
    """How many actors and what each one gets: `threads` CPU threads (default: the cluster's CPUs shared out), `gpus` GPUs
    (default: 1 each when the cluster has GPUs, else none)."""

    model: str
    actors: int = 2
    threads: int | None = None
    gpus: float | None = None
    device: str | None = None


class WorkerPool:
    """`settings.actors` ModelWorker actors on the connected Ray (see `connect`); `close()` (or `with`) ends them.
    Their models load in the background while the driver prepares the run."""

    def __init__(self, settings: PoolSettings) -> None:
        if settings.actors < 1:
            raise ScaleoutError(f"--ray-actors {settings.actors}: give at least 1")
        self.ray = import_ray()
        self.settings = settings
        resources = self.ray.cluster_resources()
        self.threads = settings.threads or max(1, int(resources.get("CPU", 1)) // settings.actors)
        self.gpus = settings.gpus if settings.gpus is not None else (1.0 if resources.get("GPU") else 0.0)
        self.restarts = 0
        self._check_room()
        self.actors: list[Any] = []
        self._where: list[Any] = []  # per slot: the object ref of its actor's where()
        for _ in range(settings.actors):
            self._start()

    def _check_room(self, wait_s: float = PLACEMENT_WAIT_S) -> None:
        """Refuse a pool the cluster cannot place (its actors would wait for resources forever); resources that
        actors ended just before are released asynchronously, so they get `wait_s` seconds to come back."""
        n = self.settings.actors
        cpus, gpus = n * (1 if self.gpus else self.threads), n * self.gpus
        deadline = time.monotonic() + wait_s
        while True:
            free = self.ray.available_resources()
            if cpus <= free.get("CPU", 0) and gpus <= free.get("GPU", 0):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise ScaleoutError(
            f"{n} Ray actors need {cpus:g} CPUs"
            + (f" and {gpus:g} GPUs" if gpus else "")
            + f"; the cluster has {free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free: "
            "lower --ray-actors or add nodes"
        )

    def _start(self, slot: int | None = None) -> None:
        """A new actor in `slot` (default: a new slot); it loads its model in the background."""
        s = self.settings
        remote = self.ray.remote(num_cpus=1 if self.gpus else self.threads, num_gpus=self.gpus, max_restarts=0)(ModelWorker)
        actor = remote.remote(s.model, self.threads, s.device or ("cuda" if self.gpus else None))
        if slot is None:
            self.actors.append(actor)
            self._where.append(actor.where.remote())
        else:
            self.actors[slot], self._where[slot] = actor, actor.where.remote()

    def ready(self) -> list[int]:
        """Wait until every live actor has loaded its model and said where it runs; their process ids."""
        self.ray.get([where for where, actor in zip(self._where, self.actors) if actor is not None])
        return self.ray.get([actor.pid.remote() for actor in self.actors if actor is not None])

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            if actor is not None:
                self.ray.kill(actor)
        self.actors, self._where = [], []

    def map(
        self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any, label: Callable[[Any], str] = str, max_attempts: int = MAX_ATTEMPTS
    ) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(backbone, memo, item, *shared)) for every item, in the order they finish.

        Put large `shared` arguments in the object store first (`ray.put`): they are sent once per actor, not per item."""
        exceptions = self.ray.exceptions
        died = (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError, exceptions.OutOfMemoryError)
        queue, attempts = deque(range(len(items))), [0] * len(items)
        in_flight: dict[Any, tuple[int, Any]] = {}  # object ref -> (item index, actor)
        while queue or in_flight:
            self._fill(fn, items, shared, queue, attempts, in_flight)
            ready, _ = self.ray.wait(list(in_flight), num_returns=1)
            index, actor = in_flight.pop(ready[0])
            try:
                result = self.ray.get(ready[0])
            except died as err:
                self._check_cluster(err)
                if attempts[index] >= max_attempts:
                    raise ScaleoutError(
                        f"{label(items[index])}: its worker died {attempts[index]} times ({type(err).__name__}); "
                        "the finished records are kept: lower the chunk size or memory use and re-run"
                    ) from err
                lost = [index] + [in_flight.pop(ref)[0] for ref in [r for r, (_, a) in in_flight.items() if a is actor]]
                queue.extendleft(reversed(lost))  # the dead actor's other items too: they would come back as errors
                print(
                    f"{self._lost(actor)} died ({type(err).__name__}); re-queued {', '.join(label(items[i]) for i in lost)}",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            except exceptions.RayTaskError as err:
                cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                message = str(cause).strip().splitlines()[0] if isinstance(cause, PersonactlError) else f"{type(cause).__name__}: {cause}"
                raise ScaleoutError(
                    f"{label(items[index])} failed on a worker: {message.splitlines()[0]}; the finished records are kept: fix it and re-run to resume"
                ) from err
            yield index, result

    def _fill(
        self, fn: Callable[..., Any], items: Sequence[Any], shared: tuple, queue: deque, attempts: list[int], in_flight: dict[Any, tuple[int, Any]]
    ) -> None:
        """Hand queued items to live actors (IN_FLIGHT each); with none alive, start a replacement."""
        if not any(a is not None for a in self.actors):
            if self.restarts >= len(self.actors) + MAX_ATTEMPTS:
                raise ScaleoutError(f"every worker died and {self.restarts} replacements too: check the cluster's memory and logs")
            self._start(0)
            self.restarts += 1
        for actor in self.actors:
            if actor is None:
                continue
            busy = sum(1 for _, a in in_flight.values() if a is actor)
            while busy < IN_FLIGHT and queue:
                index = queue.popleft()
                attempts[index] += 1
                in_flight[actor.call.remote(fn, items[index], *shared)] = (index, actor)
                busy += 1

    def _check_cluster(self, err: BaseException) -> None:
        """A dead worker whose cluster's GCS does not answer means the cluster went away, not one worker (Ray Client
        drivers, which reach the GCS only through the head, are not checked)."""
        if self.ray.util.client.ray.is_connected():
            return
        gcs = self.ray.get_runtime_context().gcs_address
        if not answers(gcs):
            raise ClusterLost(f"its GCS at {gcs} stopped answering") from err

    def _lost(self, actor: Any) -> str:
        """Forget a dead actor; 'Ray worker 2 of 4 (pid 4242 on 10.0.0.5)' (without the place if it died before saying)."""
        slot = next(i for i, live in enumerate(self.actors) if live is actor)
        self.ray.kill(actor)
        self.actors[slot] = None
        name = f"Ray worker {slot + 1} of {len(self.actors)}"
        done, _ = self.ray.wait([self._where[slot]], timeout=0)
        try:
            return f"{name} ({self.ray.get(done[0])})" if done else name
        except self.ray.exceptions.RayError:
            return name
