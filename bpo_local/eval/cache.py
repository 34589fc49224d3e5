"""A stage's finished work on disk: JSONL records keyed by what the work depended on.

Records live in a ``Journal`` (appended and fsynced one at a time, a torn last line dropped on reopening),
so a run killed at any moment keeps everything it finished. Work is never
cached as failed: a re-run retries it. Two runs sharing a file at once may both do a piece of work; the
later record wins, and nothing is corrupted (lines are appended with ``O_APPEND``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..journal import Journal


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
        self._journal = Journal(path)
        for number, record in self._journal.records():
            try:
                self._records[record["key"]] = record
            except (TypeError, KeyError) as exc:
                self._journal.close()
                raise UsageError(f"{path} line {number} is not a bpo-local eval cache record") from exc

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key``, durably."""
        record = {"key": key, **record}
        self._journal.append(record)
        self._records[key] = record

    def close(self) -> None:
        self._journal.close()
