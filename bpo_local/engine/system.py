"""What llama.cpp was built with and what it can run on, for ``bpo-local doctor``."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from importlib import metadata

_DEVICE_KINDS = ("CPU", "GPU", "iGPU", "accelerator", "meta")
"""``enum ggml_backend_dev_type`` in ggml-backend.h, in order."""


@dataclass(frozen=True)
class Device:
    """One ggml backend device, e.g. ``CUDA0`` / ``NVIDIA H100`` / ``GPU``."""

    name: str
    description: str
    kind: str


@dataclass(frozen=True)
class SystemInfo:
    llama_cpp_python: str
    ggml_version: str | None
    ggml_commit: str | None
    features: str
    """``llama_print_system_info()``: the CPU features and backends compiled in."""
    gpu_offload: bool
    devices: tuple[Device, ...]


def system_info() -> SystemInfo:
    """Ask the loaded llama.cpp build about itself (cheap: loads no model)."""
    import llama_cpp.llama_cpp as llama

    llama.llama_backend_init()
    ggml = _ggml_library()
    return SystemInfo(
        llama_cpp_python=metadata.version("llama-cpp-python"),
        ggml_version=_text(ggml, "ggml_version"),
        ggml_commit=_text(ggml, "ggml_commit"),
        features=llama.llama_print_system_info().decode("utf-8", "replace").strip(" |"),
        gpu_offload=bool(llama.llama_supports_gpu_offload()),
        devices=_devices(ggml),
    )


def _ggml_library() -> ctypes.CDLL | None:
    """libggml as llama-cpp-python loaded it; the backend registry is not in its bindings."""
    try:
        from llama_cpp._ggml import libggml
    except (ImportError, OSError):
        return None
    return libggml


def _text(lib: ctypes.CDLL | None, name: str) -> str | None:
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is None:
        return None
    fn.restype, fn.argtypes = ctypes.c_char_p, []
    value = fn()
    return value.decode("utf-8", "replace") if value else None


def _devices(lib: ctypes.CDLL | None) -> tuple[Device, ...]:
    try:
        count, get = lib.ggml_backend_dev_count, lib.ggml_backend_dev_get  # type: ignore[union-attr]
        name, description = lib.ggml_backend_dev_name, lib.ggml_backend_dev_description  # type: ignore[union-attr]
        kind = lib.ggml_backend_dev_type  # type: ignore[union-attr]
    except AttributeError:  # lib is None, or an older build without the registry
        return ()
    count.restype, count.argtypes = ctypes.c_size_t, []
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    for fn in (name, description):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    devices = []
    for i in range(count()):
        dev = get(i)
        k = kind(dev)
        devices.append(Device(
            name=(name(dev) or b"").decode("utf-8", "replace"),
            description=(description(dev) or b"").decode("utf-8", "replace"),
            kind=_DEVICE_KINDS[k] if 0 <= k < len(_DEVICE_KINDS) else f"type {k}",
        ))
    return tuple(devices)
