"""The `personactl` command line: parse, call the API, print. No logic of its own.

One module per theme registers its commands on the shared app (`_common.app`)."""

from __future__ import annotations

import sys

from ..errors import PersonactlError
from . import bench, blackbox, portable, serving, sweeps, transfer, vectors, weights  # noqa: F401, I001 - they register their commands, in this order
from ._common import app, err, out
from .safety import safety_app

__all__ = ["app", "err", "main", "out", "run"]

app.add_typer(safety_app, name="safety")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line and return exit code 2.

    The boundary catches what the person at the keyboard can cause and fix: a
    PersonactlError, and an OSError (disk full, no permission, read-only folder).
    Anything else is a bug and keeps its traceback.
    """
    try:
        app(args=argv, prog_name="personactl")  # usage errors: click prints them and exits 2
    except PersonactlError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        return exc.exit_code
    except OSError as exc:
        err.print(f"error: {os_error_message(exc)}", highlight=False, soft_wrap=True, markup=False)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def os_error_message(exc: OSError) -> str:
    """'No space left on device: runs/x/results.jsonl' (strerror and the file(s) involved)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{text}: {' -> '.join(files)}" if files else text


def main() -> None:
    sys.exit(run())
