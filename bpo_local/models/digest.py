"""sha256 of model files, cached by (path, size, mtime) so a 4 GB GGUF is hashed once, not every run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..config import private_dirs, state_dir

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The file's sha256 hex digest; remembered in the state dir until the file changes."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = state_dir() / "sha256-cache.json"
    cache = _read(cache_file)
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    cache[key] = digest.hexdigest()
    _write(cache_file, cache)
    return cache[key]


def _read(cache_file: Path) -> dict[str, str]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache_file: Path, cache: dict[str, str]) -> None:
    """A cache that cannot be written only costs a re-hash next time."""
    try:
        private_dirs(cache_file.parent)
        write_text_atomic(cache_file, json.dumps(cache))
    except OSError:
        pass
