"""The proxy's rewrite store: each user turn's rewrite, kept in SQLite (``data_dir()/rewrites.db``).

A turn is keyed by a digest of its text, BPO's build and BPO's settings (mode, sampling, seed, token
cap), so a retry, a regenerate or the turn carried as history finds its rewrite again, across
requests and restarts. The store holds at most ``capacity`` rewrites; a full one forgets the least
recently used. The file is the user's only (0600), like the run log: it holds every prompt.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import data_dir, private_file
from ..errors import RewriteStoreError

STORE_NAME = "rewrites.db"
DEFAULT_CAPACITY = 10_000
BUSY_TIMEOUT_SECONDS = 0.5
"""How long a read or write waits for another serve process's lock. The store runs on the event loop and only
saves time: past this, the request goes on without it (a warning is logged), instead of stalling every client."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rewrites (
    key TEXT PRIMARY KEY,
    original TEXT NOT NULL,
    rewrite TEXT NOT NULL,
    mode TEXT NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
)
"""


def default_path() -> Path:
    return data_dir() / STORE_NAME


def turn_key(text: str, build: str, settings: dict[str, Any]) -> str:
    """The digest that names one turn's rewrite: its text, BPO's build and BPO's settings."""
    blob = json.dumps([text, build, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RewriteStore:
    """Rewrites by turn key. Each call is one short SQLite transaction (WAL): several requests, and
    several serve processes on one data folder, may use it at once."""

    def __init__(self, db: sqlite3.Connection, path: Path, capacity: int) -> None:
        self._db = db
        self.path = path
        self.capacity = capacity

    @classmethod
    def open(cls, path: Path | None = None, capacity: int = DEFAULT_CAPACITY) -> RewriteStore:
        path = path or default_path()
        try:
            private_file(path)  # SQLite gives its -wal and -shm files the database's mode
            db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise _store_error(path, exc) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("CREATE INDEX IF NOT EXISTS rewrites_used ON rewrites (used)")
        except sqlite3.Error as exc:
            db.close()
            raise _store_error(path, exc) from exc
        return cls(db, path, capacity)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The stored rewrites among ``keys``, each marked as just used."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        try:
            rows = self._db.execute(f"SELECT key, rewrite FROM rewrites WHERE key IN ({marks})", wanted).fetchall()
            if rows:
                found = ",".join("?" * len(rows))
                self._db.execute(f"UPDATE rewrites SET used = ? WHERE key IN ({found})",
                                 [time.time(), *(k for k, _ in rows)])
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return dict(rows)

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, original: str, rewrite: str, mode: str) -> None:
        """Keep ``rewrite`` under ``key``; beyond ``capacity``, the least recently used go."""
        now = time.time()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO rewrites VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, original, rewrite, mode, now, now))
                self._db.execute("DELETE FROM rewrites WHERE key IN (SELECT key FROM rewrites ORDER BY used ASC "
                                 "LIMIT max(0, (SELECT count(*) FROM rewrites) - ?))", (self.capacity,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM rewrites").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _store_error(path: Path, exc: Exception) -> RewriteStoreError:
    return RewriteStoreError(f"cannot use the rewrite store {path}: {exc}; free disk space, fix its permissions, "
                             "or delete it (it only saves time)")
