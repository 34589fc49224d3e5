"""An append-only JSONL file that survives being killed: the resumable batch output and eval's stage caches.

Each record is appended (``O_APPEND``) and fsynced before ``append`` returns, so a run killed at any moment
(Ctrl-C, kill -9, power) keeps every record it finished; a torn last line is dropped when the file is opened.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError


class Journal:
    """One JSONL file opened for reading what is there and appending more.

    ``lock`` takes an exclusive advisory lock, so a second writer fails at once (``UsageError``) instead
    of interleaving records. Opening fails with OSError as the OS reports it.
    """

    def __init__(self, path: Path, *, lock: bool = False) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._locked = lock
            if lock:
                _lock(self._fd, path)
            with open(self._fd, "rb", closefd=False) as fh:
                data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # killed mid-write: the last line is incomplete, drop it
                os.ftruncate(self._fd, end)
            self._lines = data[:end].splitlines()
        except BaseException:
            os.close(self._fd)
            raise

    def records(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed JSON) of every complete line that was there when opened; None for a line
        that is not JSON (the caller names what it expected)."""
        for number, line in enumerate(self._lines, start=1):
            try:
                yield number, json.loads(line)
            except ValueError:
                yield number, None

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and make it durable before returning."""
        data = memoryview(dumps(record))
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)

    def replace(self, records: Iterable[dict[str, Any]]) -> None:
        """Make the file hold exactly ``records``, atomically: a new file, locked like this one before it
        takes the name, so a kill at any moment leaves the old records or the new ones."""
        folder = self.path.parent
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, os.fstat(self._fd).st_mode & 0o7777)
            if self._locked:
                _lock(fd, self.path)
            with open(fd, "wb", closefd=False) as fh:
                for record in records:
                    fh.write(dumps(record))
                fh.flush()
                os.fsync(fd)
            os.replace(temp, self.path)
            _fsync_folder(folder)
        except BaseException:
            os.close(fd)
            Path(temp).unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        os.close(self._fd)


def dumps(record: dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8, newline-terminated)."""
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise UsageError(f"{path} is being written by another bpo-local run; wait for it or use another file") from exc


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
