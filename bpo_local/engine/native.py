"""The llama.cpp C API (``llama_cpp.llama_cpp``), imported lazily and initialised once per process."""

from __future__ import annotations

import functools
import sys
from types import ModuleType


@functools.cache
def llama() -> ModuleType:
    """The low-level bindings, with the backend initialised. Heavy: import only when a model loads."""
    import llama_cpp.llama_cpp as lib

    lib.llama_backend_init()
    return lib


@functools.cache
def _log_callbacks() -> tuple[object, object]:
    """(silent, to-stderr) log callbacks, created once and kept alive for the process."""
    lib = llama()

    @lib.llama_log_callback
    def silent(level: int, text: bytes, user_data: object) -> None:
        return None

    @lib.llama_log_callback
    def to_stderr(level: int, text: bytes, user_data: object) -> None:
        sys.stderr.write(text.decode("utf-8", "replace"))

    return silent, to_stderr


def set_verbose(verbose: bool) -> None:
    """Route llama.cpp's (process-wide) log to stderr, or drop it so stderr stays clean."""
    silent, to_stderr = _log_callbacks()
    llama().llama_log_set(to_stderr if verbose else silent, None)
