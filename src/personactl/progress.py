"""Progress bars for long steps (rich), on stderr so stdout stays parseable."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)
_listeners = threading.local()  # per thread: a server job follows its own work, not another request's

Listener = Callable[[str, int, int], None]  # (description, done, total)


@contextmanager
def reporting_to(listener: Listener) -> Iterator[None]:
    """Inside, every progress bar of this thread also reports (description, done, total) to `listener`."""
    previous = getattr(_listeners, "current", None)
    _listeners.current = listener
    try:
        yield
    finally:
        _listeners.current = previous


def enabled() -> bool:
    """Bars are on unless PERSONACTL_PROGRESS=0."""
    return os.environ.get("PERSONACTL_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bar for `total` items; yields `advance(n)` (also reported to this thread's listener, if any)."""
    listener: Listener | None = getattr(_listeners, "current", None)
    done = 0

    def tell(n: int) -> None:
        nonlocal done
        done += n
        if listener is not None:
            listener(description, done, total)

    if listener is not None:
        listener(description, 0, total)
    if not enabled():
        yield tell
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)
            tell(n)

        yield advance


def note(text: str) -> None:
    """A line about long work in progress (a verdict reached midway), on stderr with the bars."""
    if enabled():
        _console.print(text, markup=False, highlight=False)
