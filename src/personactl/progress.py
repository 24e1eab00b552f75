"""Progress bars for long steps (rich), on stderr so stdout stays parseable."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


def enabled() -> bool:
    """Bars are on unless PERSONACTL_PROGRESS=0."""
    return os.environ.get("PERSONACTL_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bar for `total` items; yields `advance(n)`."""
    if not enabled():
        yield lambda n: None
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
        yield lambda n: bar.advance(task, n)


def note(text: str) -> None:
    """A line about long work in progress (a verdict reached midway), on stderr with the bars."""
    if enabled():
        _console.print(text, markup=False, highlight=False)
