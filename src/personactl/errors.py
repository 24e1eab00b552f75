"""User-facing errors: each message says what was wrong and what to do.

The CLI prints the message of any PersonactlError (and of an OSError: disk full,
no permission) on one line and exits with code 2; everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError


class PersonactlError(Exception):
    """Base class of every mistake the user can fix."""

    exit_code = 2


class ModelLoadError(PersonactlError):
    """A model spec that names nothing loadable (alias, folder, .gguf, hub id)."""


class ArchitectureError(PersonactlError):
    """A model whose decoder blocks cannot be found."""


class LayerError(PersonactlError):
    """A layer index outside the model's range."""


class VectorFileError(PersonactlError):
    """A vector file that is missing, corrupt, a pickle or of another format."""


class IncompatibleVectorError(PersonactlError):
    """A vector made for another model (hidden size or layer count differ)."""


class TraitError(PersonactlError):
    """A trait file that is missing, malformed or too small."""


class SteeringError(PersonactlError):
    """A steering request that cannot be applied (shapes, positions, batch)."""


class OutputError(PersonactlError):
    """An output path personactl will not write over: a folder it did not write, the current folder, a file."""


class OptionError(PersonactlError):
    """An option value outside what the command accepts (caught before any model is loaded)."""


class TransferError(PersonactlError):
    """A cross-model transfer request that cannot be carried out (layers, texts, sizes, config, files)."""


class ConditionError(PersonactlError):
    """A conditional-steering request that cannot be carried out (prompt files, thresholds, condition vectors)."""


class BenchError(PersonactlError):
    """Bench records that cannot be scored (a key missing, a score outside 0-100, an answer recorded twice)."""


def first_validation_error(exc: ValidationError, root: str = "config") -> str:
    """The first problem pydantic found, as `where: what` (one line for a PersonactlError message)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or root
    return f"{where}: {first['msg']}"
