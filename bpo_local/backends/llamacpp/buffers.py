"""Which of llama.cpp's extra CPU weight buffer types a model load may use.

ggml's CPU backend offers "extra" buffer types that re-lay weights for faster kernels: ``CPU_REPACK``
(AVX2/AVX-512/NEON layouts) and, on Intel Xeons with AMX (Sapphire Rapids and later), ``AMX``. The AMX one
crashes inside ``ggml_backend_amx_mul_mat`` on every quantized model (ggml-org/llama.cpp#20824, closed without
a fix), so on such a machine the default leaves AMX out and keeps everything else exactly as on any other CPU.

llama.cpp reads the list when a model loads, from a NULL-terminated array that the CPU backend builds once per
process (``ggml_backend_dev_get_extra_bufts``). Leaving a type out means rewriting that array before the load:
llama.cpp then picks among the remaining types with its own support checks, as on a machine without that type.
(Pointing weights at ``CPU_REPACK`` through ``tensor_buft_overrides`` instead would skip those checks: a tensor
type the repacker cannot lay out would get no layout and crash in ``set_tensor``.)
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Literal

from .native import llama

Policy = Literal["auto", "all", "none"]
POLICIES: tuple[Policy, ...] = ("auto", "all", "none")
"""``auto``: every extra type except those known to crash; ``all``: llama.cpp's own choice, AMX included (for a
llama.cpp build where the AMX bug is fixed); ``none``: plain CPU buffers only (``use_extra_bufts = false``)."""

CRASHING = {"AMX": "llama.cpp's AMX weight buffers crash on quantized models (ggml-org/llama.cpp#20824)"}
"""Extra buffer types left out by the ``auto`` policy, with the reason ``doctor`` shows."""

_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


@dataclass(frozen=True)
class BufferChoice:
    """What a load under ``policy`` uses: the extra buffer types offered to llama.cpp and those left out."""

    policy: Policy
    offered: tuple[str, ...]
    excluded: tuple[str, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(CRASHING.get(name, f"the {self.policy!r} policy") for name in self.excluded)


class _ExtraTypes:
    """The CPU backend's extra buffer type array, as llama.cpp built it, and a way to rewrite it in place."""

    def __init__(self) -> None:
        llama()  # first: it loads the library (with OpenMP's settings); the backend is registered by llama_backend_init
        from llama_cpp._ggml import libggml as ggml

        ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        ggml.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_buft_name.restype = ctypes.c_char_p
        device = ggml.ggml_backend_dev_by_type(_CPU_DEVICE)
        getter = ggml.ggml_backend_reg_get_proc_address(ggml.ggml_backend_dev_backend_reg(device),
                                                        b"ggml_backend_dev_get_extra_bufts")
        self._array = None
        self.original: tuple[tuple[str, int], ...] = ()
        if getter:
            self._array = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(getter)(device)
            entries = []
            while self._array and self._array[len(entries)]:
                buft = self._array[len(entries)]
                entries.append(((ggml.ggml_backend_buft_name(buft) or b"?").decode(errors="replace"), buft))
            self.original = tuple(entries)

    def offer(self, names: set[str]) -> None:
        """Rewrite the array so llama.cpp sees exactly the original types named in ``names``, in order."""
        if self._array is None:
            return
        kept = [buft for name, buft in self.original if name in names]
        for i in range(len(self.original)):
            self._array[i] = kept[i] if i < len(kept) else None


@functools.cache
def _extra_types() -> _ExtraTypes:
    return _ExtraTypes()


def available() -> tuple[str, ...]:
    """The extra CPU buffer types this llama.cpp build offers on this machine, e.g. ("AMX", "CPU_REPACK")."""
    return tuple(name for name, _ in _extra_types().original)


def choose(policy: Policy) -> BufferChoice:
    """What a load under ``policy`` would use on this machine."""
    names = available()
    if policy == "none":
        return BufferChoice(policy, (), names)
    if policy == "all":
        return BufferChoice(policy, names, ())
    return BufferChoice(policy, tuple(n for n in names if n not in CRASHING), tuple(n for n in names if n in CRASHING))


def apply(policy: Policy, params: object) -> BufferChoice:
    """Set up the next model load (``params``: its ``llama_model_params``) to use what ``policy`` chooses."""
    choice = choose(policy)
    params.use_extra_bufts = bool(choice.offered)  # type: ignore[attr-defined]
    _extra_types().offer(set(choice.offered))
    return choice
