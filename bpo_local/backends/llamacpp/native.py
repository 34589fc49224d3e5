"""The llama.cpp C API (``llama_cpp.llama_cpp``), imported lazily and initialised once per process."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from types import ModuleType

SPINCOUNT = "10000"
"""How long llama.cpp's OpenMP workers spin before they sleep while waiting for each other (libgomp's
default, 300000, spins for milliseconds: a worker whose partner lost its core to another program burns
its own core waiting). Measured on 2 cores with other programs running: 2 threads decoded 13x faster
with it, and as fast on an idle machine (benchmarks/README.md, busy machine)."""


@contextlib.contextmanager
def _openmp_waits() -> Iterator[None]:
    """``GOMP_SPINCOUNT=SPINCOUNT`` while libgomp loads (it reads its settings then), unless the user set
    how OpenMP waits; removed again so that no child process inherits it."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        yield
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library: its functions serve as callbacks llama.cpp calls with no Python running."""
    return ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)


@functools.cache
def _bindings() -> tuple[ModuleType, object]:
    """(bindings, a log callback that drops everything); llama.cpp is silent from the start.

    Both loggers are C: llama.cpp's own (to stderr), and libc's ``abs``, which reads the first argument
    (the level) and returns; C calling conventions leave the other two unread. A Python callback would run
    Python wherever llama.cpp logs: on the main thread (a model loading) a pending Ctrl-C is raised inside
    it, where ctypes prints "Exception ignored" and drops it."""
    with _openmp_waits():
        import llama_cpp.llama_cpp as lib

    silent = ctypes.cast(libc().abs, lib.llama_log_callback)
    lib.llama_log_set(silent, None)
    lib.llama_backend_init()
    return lib, silent


def llama() -> ModuleType:
    """The low-level bindings, with the backend initialised. Heavy: call only when a model loads."""
    return _bindings()[0]


def set_verbose(verbose: bool) -> None:
    """Route llama.cpp's (process-wide) log to stderr, or drop it so stderr stays clean."""
    lib, silent = _bindings()
    lib.llama_log_set(ctypes.cast(None, lib.llama_log_callback) if verbose else silent, None)  # NULL: its own
