"""ModelInfo from a loaded llama.cpp model: metadata, file type, offload."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

from ...backend import ModelInfo
from .native import llama


def read_metadata(model: object) -> dict[str, str]:
    """All GGUF metadata llama.cpp exposes as strings (arrays are summarised by llama.cpp)."""
    lib = llama()
    meta: dict[str, str] = {}
    for i in range(lib.llama_model_meta_count(model)):
        key = _read_string(lib.llama_model_meta_key_by_index, model, i)
        meta[key] = _read_string(lib.llama_model_meta_val_str_by_index, model, i)
    return meta


def file_type_name(ftype: int) -> str:
    """"Q4_K_M", "Q8_0", "F16", "F32": the LLAMA_FTYPE_* name, as quantize tools spell it."""
    lib = llama()
    ftype &= ~lib.LLAMA_FTYPE_GUESSED
    for name in dir(lib):
        if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED" and getattr(lib, name) == ftype:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
    return f"ftype {ftype}"


def model_info(model: object, path: Path, *, n_ctx: int, gpu_layers: int, backend: str) -> ModelInfo:
    lib = llama()
    meta = read_metadata(model)
    template = lib.llama_model_chat_template(model, None)
    return ModelInfo(
        name=path.name,
        path=path,
        title=meta.get("general.name") or path.stem,
        size_bytes=path.stat().st_size,
        architecture=meta.get("general.architecture", "unknown"),
        n_params=lib.llama_model_n_params(model),
        file_type=file_type_name(lib.llama_model_ftype(model)),
        n_ctx_train=lib.llama_model_n_ctx_train(model),
        n_ctx=n_ctx,
        n_layer=lib.llama_model_n_layer(model),
        gpu_layers=gpu_layers,
        backend=backend,
        chat_template=template.decode("utf-8", "replace") if template else None,
        metadata=meta,
    )


def _read_string(read: Callable[[object, int, object, int], int], model: object, index: int) -> str:
    """A string from a llama.cpp getter with snprintf semantics, growing the buffer once if needed."""
    size = 256
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = read(model, index, buf, size)
        if n < size:
            return buf.value.decode("utf-8", "replace") if n >= 0 else ""
        size = n + 1
    return buf.value.decode("utf-8", "replace")
