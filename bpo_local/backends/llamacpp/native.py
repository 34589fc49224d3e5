"""The llama.cpp C API (``llama_cpp.llama_cpp``), imported lazily and initialised once per process."""

from __future__ import annotations

import functools
import sys
from types import ModuleType


@functools.cache
def _bindings() -> tuple[ModuleType, object, object]:
    """(bindings, silent log callback, stderr log callback); llama.cpp is silent from the start."""
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
