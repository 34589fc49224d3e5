"""Stopping a ``llama_decode`` in flight from another thread, with no Python running inside llama.cpp.

llama.cpp asks a context's abort callback after every node of the compute graph (hundreds a token). A
Python callback would take the GIL there each time, and wait for whichever thread holds it (serve's
event loop) while the other compute threads spin. The callback is instead C's own ``strlen`` reading a
two-byte flag: empty reads as 0 (go on), ``"\\x01"`` as 1 (stop); llama.cpp tests the callback's ``bool``
result, the low byte of the return register in every C calling convention, so 1 is true. Raising the
flag is one byte written from any thread; the decode stops within a graph node and returns 2.
"""

from __future__ import annotations

import ctypes
from types import ModuleType

from .native import libc


class Interrupt:
    """The abort flag of one llama.cpp context: ``set()`` from any thread stops its decode in flight
    (or the next one); ``clear()`` once the decode it stopped has returned."""

    def __init__(self, lib: ModuleType, ctx: object) -> None:
        self._flag = ctypes.create_string_buffer(2)
        self._callback = ctypes.cast(libc().strlen, lib.ggml_abort_callback)
        lib.llama_set_abort_callback(ctx, self._callback, ctypes.cast(self._flag, ctypes.c_void_p))

    def set(self) -> None:
        self._flag[0] = b"\x01"

    def clear(self) -> None:
        self._flag[0] = b"\x00"
