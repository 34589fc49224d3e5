"""A stage's finished work on disk: JSONL records keyed by what the work depended on.

Each record is appended and fsynced before ``put`` returns, so a run killed at any moment (Ctrl-C,
kill -9, power) keeps everything it finished; a torn last line is dropped on reopening. Work is never
cached as failed: a re-run retries it. Two runs sharing a file at once may both do a piece of work; the
later record wins, and nothing is corrupted (lines are appended with ``O_APPEND``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError


def cache_key(**parts: Any) -> str:
    """A stable digest of ``parts`` (JSON-serialisable): the stage, models, settings and inputs."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class StageCache:
    """Records by key, loaded from and appended to one JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _load(self) -> None:
        with open(self._fd, "rb", closefd=False) as fh:
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # killed mid-write
            os.ftruncate(self._fd, end)
        for number, line in enumerate(data[:end].splitlines(), start=1):
            try:
                record = json.loads(line)
                self._records[record["key"]] = record
            except (ValueError, TypeError, KeyError) as exc:
                raise UsageError(f"{self.path} line {number} is not a bpo-local eval cache record") from exc

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key``, durably."""
        record = {"key": key, **record}
        line = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while line:
            line = line[os.write(self._fd, line):]
        os.fsync(self._fd)
        self._records[key] = record

    def close(self) -> None:
        os.close(self._fd)
