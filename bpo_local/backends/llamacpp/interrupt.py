"""Stopping a ``llama_decode`` in flight, from another thread or by Ctrl-C, with no Python inside llama.cpp.

llama.cpp asks a context's abort callback after every node of the compute graph (hundreds a token). A
Python callback would take the GIL there each time, and wait for whichever thread holds it (serve's
event loop) while the other compute threads spin. The callback is instead C's own ``strlen`` reading a
two-byte flag: empty reads as 0 (go on), ``"\\x01"`` as 1 (stop); llama.cpp tests the callback's ``bool``
result, the low byte of the return register in every C calling convention, so 1 is true. Raising the
flag is one byte written from any thread; the decode stops within a graph node and returns 2.

Ctrl-C during a decode on the main thread: Python runs the handler (KeyboardInterrupt, the REPL's own)
only once the C call returns, a micro-batch of prompt later. But Python's own C-level handler writes the
signal's number to the wakeup file descriptor at once: while such a decode runs, that is a pipe whose
reader, a thread of its own, raises the flag. The decode stops, and the handler runs as it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import threading
from collections.abc import Iterator
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

    @contextlib.contextmanager
    def on_ctrl_c(self) -> Iterator[None]:
        """While active on the main thread, Ctrl-C raises the flag at once (its handler runs on leaving)."""
        if threading.current_thread() is not threading.main_thread() or os.name == "nt":
            yield  # signals reach Python on the main thread only (and Windows has no wakeup pipe)
            return
        watch = _ctrl_c_watch()
        forward = signal.set_wakeup_fd(watch.write_end, warn_on_full_buffer=False)
        if forward != watch.write_end:  # (it is ours where a KeyboardInterrupt cut the last exit short)
            watch.forward = forward
        watch.interrupt = self
        try:
            yield
        finally:
            watch.interrupt = None
            try:
                signal.set_wakeup_fd(watch.forward)
            except (OSError, ValueError):  # its owner closed it meanwhile
                signal.set_wakeup_fd(-1)
                watch.forward = -1


class _CtrlCWatch:
    """The reader of the wakeup pipe: raises the flag of the interrupt watching for a SIGINT, and passes
    every byte on to the descriptor set before (an asyncio loop's, say)."""

    def __init__(self) -> None:
        self._read, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.forward = -1
        self.interrupt: Interrupt | None = None
        threading.Thread(target=self._watch, name="bpo-ctrl-c", daemon=True).start()

    def _watch(self) -> None:
        while received := os.read(self._read, 64):
            interrupt = self.interrupt
            if interrupt is not None and signal.SIGINT in received:
                interrupt.set()
            if self.forward >= 0:
                with contextlib.suppress(OSError):
                    os.write(self.forward, received)


@functools.cache
def _ctrl_c_watch() -> _CtrlCWatch:
    """One per process, as the wakeup descriptor is."""
    return _CtrlCWatch()
