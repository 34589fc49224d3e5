"""What this machine offers llama.cpp: physical cores, GPU offload, compute devices, build info."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
from dataclasses import dataclass

from .native import llama

_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator"}


@dataclass(frozen=True)
class Device:
    backend: str
    """ggml backend name: "CPU", "CUDA", "Metal", "Vulkan", ..."""
    kind: str
    description: str


@dataclass(frozen=True)
class SystemInfo:
    llama_cpp_python: str
    llama_cpp: str
    gpu_offload: bool
    physical_cores: int
    devices: tuple[Device, ...]
    features: str
    """llama_print_system_info(): the CPU features and backends llama.cpp was built with."""


def physical_cores() -> int:
    """Physical CPU cores usable by this process (``os.cpu_count()`` counts hyper-threads)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, _count_physical_cores() or usable))


def _count_physical_cores() -> int | None:
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        cores, physical = set(), "0"
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical = value.strip()
            elif key == "core id":
                cores.add((physical, value.strip()))
        return len(cores) or None
    if system == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=5,
                                 check=False)
            return int(out.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    return None


def devices() -> tuple[Device, ...]:
    """The compute devices ggml registered (CPU always; GPUs when the build supports them)."""
    llama()  # first: it loads the library with OpenMP's settings
    try:
        from llama_cpp._ggml import libggml
    except ImportError:  # older llama-cpp-python without the ggml handle
        return ()
    lib = libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_description.restype = ctypes.c_char_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        found.append(Device(
            backend=(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) or b"?").decode(),
            kind=_DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "other"),
            description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
        ))
    return tuple(found)


def gpu_backend() -> str | None:
    """Backend name of the first GPU-like device ("CUDA", "Metal", ...); None on a CPU-only build or
    when the build supports a GPU but this machine has none."""
    if not llama().llama_supports_gpu_offload():
        return None
    found = devices()
    if not found:
        return "GPU"  # these bindings cannot list devices; trust the build
    return next((d.backend for d in found if d.kind != "CPU"), None)


def _llama_cpp_build(lib: object) -> str:
    """llama.cpp's version with the ggml version and commit it was built from, e.g.
    ``0.5.0-dev (ggml 0.25.3, commit 0c1e570)``; whatever part the library does not expose is left out."""
    version = lib.llama_version().decode() if hasattr(lib, "llama_version") else "unknown"
    try:
        from llama_cpp._ggml import libggml
    except ImportError:
        return version
    parts = []
    for name, label in (("ggml_version", "ggml "), ("ggml_commit", "commit ")):
        func = getattr(libggml, name, None)
        if func is not None:
            func.restype = ctypes.c_char_p
            parts.append(label + (func() or b"?").decode(errors="replace"))
    return f"{version} ({', '.join(parts)})" if parts else version


def system_info() -> SystemInfo:
    """Everything ``doctor`` reports about llama.cpp on this machine."""
    lib = llama()  # first: it loads the library with OpenMP's settings
    import llama_cpp

    return SystemInfo(
        llama_cpp_python=llama_cpp.__version__,
        llama_cpp=_llama_cpp_build(lib),
        gpu_offload=bool(lib.llama_supports_gpu_offload()),
        physical_cores=physical_cores(),
        devices=devices(),
        features=lib.llama_print_system_info().decode(errors="replace").strip(),
    )
