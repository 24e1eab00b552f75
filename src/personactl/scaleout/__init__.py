"""Scale-out on Ray: a pool of model workers (one model per actor) that sweeps and extractions spread their work over.

The same code runs on a local Ray instance (`--ray local`) and on a cluster
(`--ray auto` or an address); the driver stays the only writer of results.
Against a cluster, `run_on_ray` runs the driver in a child process it watches,
so a lost cluster, a dead worker and Ctrl-C each end in one line.
Ray is the optional extra `personactl[ray]`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from .cluster import Interrupted, ScaleoutError, connect, parse_address
from .driver import Ending, run_on_ray
from .pool import PoolSettings, WorkerPool
from .tasks import RayRunner, extract_traits

__all__ = [
    "Ending",
    "Interrupted",
    "PoolSettings",
    "RayRunner",
    "ScaleoutError",
    "WorkerPool",
    "connect",
    "extract_traits",
    "parse_address",
    "ray_pool",
    "run_on_ray",
]


@contextmanager
def ray_pool(address: str, settings: PoolSettings) -> Iterator[WorkerPool]:
    """Connect to Ray as `address` says (local, auto, HOST:PORT) and start the pool; both end with the block."""
    with connect(address), WorkerPool(settings) as pool:
        yield pool
