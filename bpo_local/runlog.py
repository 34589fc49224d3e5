"""The run log: every optimization, kept in SQLite (``data_dir()/logs.db``), searchable and exportable.

Each entry is committed on its own (WAL, synchronous=FULL), so a crash never loses an entry written
before it. The schema migrates forward: ``MIGRATIONS`` is append-only and ``PRAGMA user_version``
counts how many of them a database has applied.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import data_dir, private_file
from .errors import BpoLocalError, RunLogTooNew, RunLogUnusable

if TYPE_CHECKING:
    from .optimizer import OptimizeResult

LOG_NAME = "logs.db"

Migration = Callable[[sqlite3.Connection], None]


def _m001_runs(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            created TEXT NOT NULL,
            model TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            mode TEXT NOT NULL,
            prompt TEXT NOT NULL,
            output TEXT NOT NULL,
            candidates TEXT NOT NULL,
            finish_reasons TEXT NOT NULL,
            params TEXT NOT NULL,
            seed INTEGER,
            timings TEXT NOT NULL,
            interrupted INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX runs_created ON runs (created)")


def _m002_search(db: sqlite3.Connection) -> None:
    """Full-text index over prompts and all candidates, where SQLite has FTS5 (else search uses LIKE)."""
    if not _has_fts5(db):
        return
    db.execute("CREATE VIRTUAL TABLE runs_fts USING fts5(prompt, output)")
    for row_id, prompt, candidates in db.execute("SELECT id, prompt, candidates FROM runs").fetchall():
        _index(db, row_id, prompt, json.loads(candidates))


def _m003_optional_fingerprint(db: sqlite3.Connection) -> None:
    """``model_sha256`` may be NULL (a remote model has no file to hash); ``backend`` says where it ran.
    SQLite cannot drop NOT NULL in place, so the table is rebuilt with the same ids (the FTS rowids)."""
    db.execute(
        """
        CREATE TABLE runs_new (
            id INTEGER PRIMARY KEY,
            created TEXT NOT NULL,
            model TEXT NOT NULL,
            model_sha256 TEXT,
            backend TEXT,
            mode TEXT NOT NULL,
            prompt TEXT NOT NULL,
            output TEXT NOT NULL,
            candidates TEXT NOT NULL,
            finish_reasons TEXT NOT NULL,
            params TEXT NOT NULL,
            seed INTEGER,
            timings TEXT NOT NULL,
            interrupted INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    columns = "id, created, model, model_sha256, mode, prompt, output, candidates, finish_reasons, params, seed, " \
              "timings, interrupted"
    db.execute(f"INSERT INTO runs_new ({columns}) SELECT {columns} FROM runs")
    db.execute("DROP TABLE runs")
    db.execute("ALTER TABLE runs_new RENAME TO runs")
    db.execute("CREATE INDEX runs_created ON runs (created)")


MIGRATIONS: list[Migration] = [_m001_runs, _m002_search, _m003_optional_fingerprint]
"""Append only: a database at ``user_version`` k has applied ``MIGRATIONS[:k]``."""


def default_path() -> Path:
    return data_dir() / LOG_NAME


class RunLog:
    """An open run log. ``RunLog.open()`` creates or migrates it; use as a context manager or ``close()``."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._searchable = _table_exists(db, "runs_fts")

    @classmethod
    def open(cls, path: Path | None = None) -> RunLog:
        path = path or default_path()
        try:
            private_file(path)  # SQLite gives its -wal and -shm files the database's mode
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise _log_error(path, exc) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            migrate(db, path)
        except sqlite3.Error as exc:
            db.close()
            raise _log_error(path, exc) from exc
        except BaseException:
            db.close()
            raise
        return cls(db, path)

    def record(self, result: OptimizeResult, model_sha256: str | None = None, backend: str | None = None) -> int:
        """Store one optimization (interrupted ones too, flagged); returns its id. Committed at once.
        ``model_sha256`` is the model file's digest when the backend has a file (None for a server)."""
        timings = result.to_dict()["timings"]
        row = {
            "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "model": result.model,
            "model_sha256": model_sha256,
            "backend": backend,
            "mode": result.mode,
            "prompt": result.prompt,
            "output": result.text,
            "candidates": _json(list(result.candidates)),
            "finish_reasons": _json(list(result.finish_reasons)),
            "params": _json(dict(result.params)),
            "seed": result.seed,
            "timings": _json(timings),
            "interrupted": int(result.cancelled),
        }
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        try:
            with _transaction(self._db):
                row_id = self._db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", row).lastrowid
                if self._searchable:
                    _index(self._db, row_id, result.prompt, list(result.candidates))
        except sqlite3.Error as exc:
            raise _log_error(self.path, exc) from exc
        return int(row_id)

    def query(self, search: str | None = None, limit: int | None = 20) -> list[dict[str, Any]]:
        """Newest first; ``search`` keeps entries whose prompt or candidates hold every word of it (as a
        word prefix with FTS5, as a substring without)."""
        sql, args = "SELECT runs.* FROM runs", []
        words = search.split() if search else []
        if words and self._searchable:
            sql += " JOIN runs_fts ON runs_fts.rowid = runs.id WHERE runs_fts MATCH ?"
            args.append(" ".join('"' + word.replace('"', '""') + '"*' for word in words))
        elif words:
            clause = "(runs.prompt LIKE ? ESCAPE '!' OR runs.candidates LIKE ? ESCAPE '!')"
            sql += " WHERE " + " AND ".join([clause] * len(words))
            for word in words:
                pattern = "%" + word.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
                args += [pattern, pattern]
        sql += " ORDER BY runs.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        try:
            cursor = self._db.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [_entry(dict(zip(names, values))) for values in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise _log_error(self.path, exc) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations this database lacks, all in one transaction (concurrent openers wait)."""
    with _transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RunLogTooNew(path, version, len(MIGRATIONS))
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _index(db: sqlite3.Connection, row_id: int, prompt: str, candidates: list[str]) -> None:
    db.execute("INSERT INTO runs_fts (rowid, prompt, output) VALUES (?, ?, ?)",
               (row_id, prompt, "\n\n".join(candidates)))


def _has_fts5(db: sqlite3.Connection) -> bool:
    try:
        db.execute("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    db.execute("DROP TABLE temp._fts5_probe")
    return True


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("candidates", "finish_reasons", "params", "timings"):
        row[key] = json.loads(row[key])
    row["interrupted"] = bool(row["interrupted"])
    return row


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _log_error(path: Path, exc: Exception) -> BpoLocalError:
    return RunLogUnusable(path, f"is unusable ({exc})")
