"""The llama.cpp C API (``llama_cpp.llama_cpp``), imported lazily and initialised once per process."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
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
def _bindings() -> tuple[ModuleType, object, object]:
    """(bindings, silent log callback, stderr log callback); llama.cpp is silent from the start."""
    with _openmp_waits():
        import llama_cpp.llama_cpp as lib

    @lib.llama_log_callback
    def silent(level: int, text: bytes, user_data: object) -> None:
        return None

    @lib.llama_log_callback
    def to_stderr(level: int, text: bytes, user_data: object) -> None:
        sys.stderr.write(text.decode("utf-8", "replace"))

    lib.llama_log_set(silent, None)
    lib.llama_backend_init()
    return lib, silent, to_stderr


def llama() -> ModuleType:
    """The low-level bindings, with the backend initialised. Heavy: call only when a model loads."""
    return _bindings()[0]


def set_verbose(verbose: bool) -> None:
    """Route llama.cpp's (process-wide) log to stderr, or drop it so stderr stays clean."""
    lib, silent, to_stderr = _bindings()
    lib.llama_log_set(to_stderr if verbose else silent, None)
