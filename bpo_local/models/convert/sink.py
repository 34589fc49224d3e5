"""Where a GGUF's tensor bytes go: through the page cache, or straight to the disk.

Through the page cache, a stored tensor is copied file to file in the kernel (``copy_file_range``)
and the writer returns while the kernel writes back. That costs a kernel copy plus a page-cache
page per output byte, the reclaim of other pages to make room and the write-back behind it, and
once the writer has more dirty than Linux leaves alone (halfway between the background and the
hard dirty thresholds that ``vm.dirty_*`` set: its "freerun" ceiling) every further write is paced
down toward the disk's speed, buffered. For larger outputs (a 7B F16 on a 24 GB host) the bytes
are gathered in page-aligned buffers and written with ``O_DIRECT``, two at a time, by writer
threads while the next buffer fills: one user-space copy per byte and no page cache, about a third
of the CPU time, at the disk's direct speed. A file system that refuses ``O_DIRECT`` gets the
page-cache path. Each sink says which path it took and why (``Sink.how``), for the conversion's report.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO, Protocol

_ALIGN = 4096
"""O_DIRECT offsets, lengths and buffer addresses are multiples of this (any logical block size up to 4 KiB)."""
_BUFFER_BYTES = 16 * 1024 * 1024
_WRITERS = 2
"""Direct writes in flight at once: a disk may need more than one queued to reach its speed (the 7B F16 on
a virtio disk: 7.1 s against 7.9 s with one; four gained nothing more)."""
_BUFFERS = _WRITERS + 2
"""One filling, the others written or waiting, so the reader rarely waits for a writer."""
_READ_BYTES = 8 * 1024 * 1024
_VMSTAT = Path("/proc/vmstat")


class TruncatedSource(Exception):
    """A source file ended before the bytes asked for."""


class Sink(Protocol):
    """Appends to the GGUF being written, after its header."""

    how: str
    """Which path the bytes take and why, in words (e.g. for ``convert``'s report)."""

    def write(self, data: bytes | memoryview) -> None: ...

    def copy(self, src: int, offset: int, nbytes: int) -> None:
        """Append ``nbytes`` of file descriptor ``src`` from ``offset``; TruncatedSource if it ends first."""

    def tell(self) -> int: ...

    def close(self) -> None:
        """Everything appended is in the file (or an OSError says why not)."""

    def abort(self) -> None:
        """Stop and release everything; the file is left to the caller to delete."""


def open_sink(f: BinaryIO, path: Path, data_bytes: int) -> Sink:
    """The sink for ``data_bytes`` more bytes after what ``f`` (open on ``path``) holds."""
    f.flush()
    free = throttle_free_bytes()
    if free == float("inf"):
        return _CachedSink(f, f"through the page cache ({_NO_LIMIT})")
    size, unpaced = f"{data_bytes / 1e9:.1f} GB", f"the {free / 1e9:.1f} GB Linux leaves dirty without pacing the writer"
    if data_bytes <= free:
        return _CachedSink(f, f"through the page cache ({size} fits in {unpaced})")
    try:
        return _DirectSink(f, path, f"with O_DIRECT ({size} is more than {unpaced})")
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
    return _CachedSink(f, f"through the page cache (this file system refuses O_DIRECT; what is past {unpaced} "
                          "goes at the disk's buffered speed)")


_NO_LIMIT = "no O_DIRECT here, or Linux's dirty-page limits are unreadable"


def throttle_free_bytes() -> int | float:
    """Bytes a writer may leave dirty before Linux starts pacing it toward the disk's speed (the
    "freerun" ceiling of ``balance_dirty_pages``: halfway between the background and the hard dirty
    thresholds, as the kernel computes them in ``/proc/vmstat``); infinite where that is unknown or
    ``O_DIRECT`` does not exist (the page-cache path is then always taken)."""
    if not hasattr(os, "O_DIRECT"):
        return float("inf")
    try:
        pages = dict(line.split() for line in _VMSTAT.read_text().splitlines())
        hard, background = int(pages["nr_dirty_threshold"]), int(pages["nr_dirty_background_threshold"])
    except (OSError, ValueError, KeyError):
        return float("inf")
    return (hard + background) // 2 * mmap.PAGESIZE


class _CachedSink:
    """Writes through ``f`` and the page cache; stored tensors are copied in the kernel where it can."""

    def __init__(self, f: BinaryIO, how: str) -> None:
        self._f = f
        self.how = how

    def write(self, data: bytes | memoryview) -> None:
        self._f.write(data)

    def copy(self, src: int, offset: int, nbytes: int) -> None:
        self._f.flush()
        start = self._f.tell()
        done = 0
        while done < nbytes:
            n = _copy_range(src, self._f.fileno(), nbytes - done, offset + done, start + done)
            if n == 0:
                raise TruncatedSource
            done += n
        self._f.seek(start + nbytes)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.flush()

    def abort(self) -> None:
        pass


def _copy_range(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> int:
    """One ``copy_file_range`` step (bytes copied, 0 at end of file), or read + write where not supported."""
    try:
        return os.copy_file_range(src, dst, count, src_offset, dst_offset)
    except AttributeError:  # not Linux
        pass
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    data = os.pread(src, min(count, _READ_BYTES), src_offset)
    return os.pwrite(dst, data, dst_offset)


class _DirectSink:
    """Fills page-aligned buffers and hands each full one to a thread that writes it with ``O_DIRECT``.

    The buffers start at the page holding the end of the header (re-read from the file), so every
    direct write is aligned; the last partial page is written through the page cache at close.
    """

    def __init__(self, f: BinaryIO, path: Path, how: str) -> None:
        self._f = f
        self._how = how
        end = f.tell()
        self._base = end - end % _ALIGN
        reader = os.open(path, os.O_RDONLY)
        try:
            head = os.pread(reader, end - self._base, self._base)
        finally:
            os.close(reader)
        self._writer = _BufferWriter(os.open(path, os.O_WRONLY | os.O_DIRECT), f.fileno())
        self._buffer = self._writer.free.get()
        self._fill = 0
        self.write(head)

    def write(self, data: bytes | memoryview) -> None:
        data = memoryview(data).cast("B")
        while data:
            n = min(len(data), _BUFFER_BYTES - self._fill)
            self._buffer[self._fill:self._fill + n] = data[:n]
            self._filled(n)
            data = data[n:]

    def copy(self, src: int, offset: int, nbytes: int) -> None:
        while nbytes:
            with memoryview(self._buffer) as view:
                n = os.preadv(src, [view[self._fill:self._fill + min(nbytes, _BUFFER_BYTES - self._fill)]], offset)
            if n == 0:
                raise TruncatedSource
            self._filled(n)
            offset, nbytes = offset + n, nbytes - n

    @property
    def how(self) -> str:
        if self._writer.fell_back:
            return "through the page cache (this file system took O_DIRECT at open, then refused its writes)"
        return self._how

    def tell(self) -> int:
        return self._base + self._fill

    def close(self) -> None:
        whole = self._fill - self._fill % _ALIGN
        tail = bytes(self._buffer[whole:self._fill])
        self._writer.put(self._buffer, self._base, whole)
        self._writer.finish()
        if os.pwrite(self._f.fileno(), tail, self._base + whole) != len(tail):
            raise OSError(errno.ENOSPC, "the last bytes of the output were not all written")
        self._f.seek(self._base + self._fill)

    def abort(self) -> None:
        self._writer.finish(check=False)

    def _filled(self, n: int) -> None:
        self._fill += n
        if self._fill == _BUFFER_BYTES:
            self._writer.put(self._buffer, self._base, _BUFFER_BYTES)
            self._base += _BUFFER_BYTES
            self._buffer = self._writer.free.get()
            self._fill = 0


class _BufferWriter:
    """``_WRITERS`` threads writing the buffers they are given at their offsets, then handing each back on
    ``free``.

    Its first error is raised by the next ``put`` or by ``finish``. If the file system takes
    ``O_DIRECT`` at open but refuses the write (EINVAL), the rest goes through ``fallback``.
    It owns ``fd`` and closes it when finished.
    """

    def __init__(self, fd: int, fallback: int) -> None:
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        try:
            for _ in range(_BUFFERS):
                self.free.put(mmap.mmap(-1, _BUFFER_BYTES))
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._fallback, self._direct = fd, fallback, fd
        self._todo: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name="gguf-writer", daemon=True) for _ in range(_WRITERS)]
        for thread in self._threads:
            thread.start()

    def put(self, buffer: mmap.mmap, offset: int, nbytes: int) -> None:
        self._raise()
        self._todo.put((buffer, offset, nbytes))

    def finish(self, *, check: bool = True) -> None:
        if self._direct is not None:
            for _ in self._threads:
                self._todo.put(None)
            for thread in self._threads:
                thread.join()
            direct, self._direct = self._direct, None  # closed once, even if closing fails
            os.close(direct)
        if check:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (job := self._todo.get()) is not None:
            buffer, offset, nbytes = job
            if self._error is None:
                try:
                    self._write(memoryview(buffer)[:nbytes], offset)
                except BaseException as exc:  # kept for the caller: this thread must hand every buffer back
                    with self._error_lock:
                        self._error = self._error or exc
            self.free.put(buffer)

    @property
    def fell_back(self) -> bool:
        """Whether the file system refused a direct write, so the rest went through ``fallback``."""
        return self._fd == self._fallback

    def _write(self, view: memoryview, offset: int) -> None:
        with view:
            while view:
                fd = self._fd  # the other writer may switch it meanwhile
                try:
                    n = os.pwrite(fd, view, offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or fd == self._fallback:
                        raise
                    self._fd = self._fallback
                    continue
                if n == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view, offset = view[n:], offset + n
