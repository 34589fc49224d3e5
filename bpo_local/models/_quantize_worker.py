"""Run one ``llama_model_quantize`` in a child process: ``python _quantize_worker.py SRC DST QUANT NTHREAD``.

Executed by path (not as part of the package) so the child imports only llama_cpp. llama.cpp's log lines
go to stdout, where the parent reads per-tensor progress and errors. The exit status is llama.cpp's.
A child runs in C for minutes and cannot be interrupted from Python, so the parent kills it on Ctrl-C;
on Linux it also dies with its parent (PR_SET_PDEATHSIG), so a killed convert leaves no writer behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _ftype(quant: str) -> int:
    import llama_cpp.llama_cpp as lib

    name = "LLAMA_FTYPE_ALL_F32" if quant == "f32" else f"LLAMA_FTYPE_MOSTLY_{quant.upper()}"
    return int(getattr(lib, name))


def main(src: str, dst: str, quant: str, nthread: str, parent: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    _die_with_parent(int(parent))
    import llama_cpp.llama_cpp as lib

    @lib.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        sys.stdout.write(text.decode("utf-8", "replace"))
        sys.stdout.flush()

    lib.llama_log_set(forward, ctypes.c_void_p(0))
    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.ftype = _ftype(quant)
    params.nthread = int(nthread)
    return int(lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
