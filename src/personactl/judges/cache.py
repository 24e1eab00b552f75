"""A disk cache of judge scores, so re-running a sweep never pays for the same judgement twice.

One sqlite table maps sha256(judge_id, prompt, answer) to a score. A stored
None ("the judge could not tell") is kept apart from a missing entry, so
unusable answers are not re-sent either. The sqlite work runs in the calling
thread, behind a lock, which is all a single asyncio process needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

CACHE_DIR_ENV = "PERSONACTL_CACHE_DIR"


def default_cache_path() -> Path:
    """`$PERSONACTL_CACHE_DIR/judge_cache.sqlite`, else `~/.cache/personactl/judge_cache.sqlite`."""
    folder = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "personactl"
    return Path(folder).expanduser() / "judge_cache.sqlite"


def cache_key(judge_id: str, prompt: str, answer: str) -> str:
    """The row key: sha256 of the three strings, encoded so no two triples collide."""
    return hashlib.sha256(json.dumps([judge_id, prompt, answer]).encode()).hexdigest()


class JudgeCache:
    """Scores by (judge_id, prompt, answer) in one sqlite file; counts hits and misses."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # One connection; the lock makes it safe when score() hops to a helper thread.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value REAL)")
        self._db.commit()

    def get(self, judge_id: str, prompt: str, answer: str) -> tuple[bool, float | None]:
        """(True, score) when cached (score may be None), else (False, None)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM scores WHERE key = ?", (cache_key(judge_id, prompt, answer),)).fetchone()
            if row is None:
                self.misses += 1
                return False, None
            self.hits += 1
            return True, row[0]

    def put(self, judge_id: str, prompt: str, answer: str, value: float | None) -> None:
        """Store one score (None included), replacing any earlier one."""
        self.put_many([(judge_id, prompt, answer, value)])

    def put_many(self, items: Iterable[tuple[str, str, str, float | None]]) -> None:
        """Store many (judge_id, prompt, answer, score) in one transaction."""
        rows = [(cache_key(j, p, a), None if v is None else float(v)) for j, p, a, v in items]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores (key, value) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        """Close the database (the object is unusable afterwards)."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"
