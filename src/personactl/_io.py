"""Atomic file writes: a crash never leaves half a file behind."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def temp_folder_beside(target: str | Path) -> Path:
    """A new empty folder next to `target` (hidden, unique name) to build its replacement in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))


def check_replaceable(target: str | Path, owned: str | Sequence[str]) -> Path:
    """Refuse (OutputError) unless `target` is absent, an empty folder, or a folder this tool wrote.

    A folder counts as ours when it holds one of the marker files `owned` (e.g. an
    adapter's persona card). The current folder and its parents are never replaced.
    """
    target = Path(target)
    markers = (owned,) if isinstance(owned, str) else tuple(owned)
    resolved, here = target.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise OutputError(f"refusing to replace {target}: it holds the current folder; give a new folder (e.g. {resolved / 'out'})")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputError(f"refusing to replace {target}: it is a file or a link, not a folder personactl wrote; give a new folder")
    if target.is_dir() and any(target.iterdir()) and not any((target / m).is_file() for m in markers):
        raise OutputError(
            f"refusing to replace {target}: it is not a folder personactl wrote (no {' or '.join(markers)} in it); "
            "give a new or empty folder, or move it away yourself"
        )
    return target


def replace_folder(finished: str | Path, target: str | Path, *, owned: str | Sequence[str]) -> Path:
    """Move the finished folder `finished` to `target`, replacing what was there.

    Only a folder this tool wrote (one holding a marker file named in `owned`) or an
    empty one is replaced; anything else is refused (see `check_replaceable`). The old
    folder is set aside under a unique hidden name and deleted only once the new one is
    in place, so a kill at any moment leaves either the old or the new folder under
    `target`, and no other sibling is ever touched.
    """
    finished, target = Path(finished), Path(target)
    check_replaceable(target, owned)
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{secrets.token_hex(6)}")
        os.replace(target, aside)
    try:
        os.replace(finished, target)
    except BaseException:
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
