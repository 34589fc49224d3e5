"""The local backend: GGUF models through llama.cpp's C API. Knows nothing of BPO.

    with Engine("model.gguf") as engine:
        prompt = tuple(engine.tokenize("Hello", add_bos=True))
        for event in (gen := engine.generate(Request(prompt, max_new_tokens=32, n=2))):
            print(event.index, event.text)
        print(gen.result.timings)

    for event in engine.generate_many(requests, max_sequences=8):   # several requests decoded together
        ...  # (request index, TokenEvent) per token, RequestDone(index, result) per finished request

``Request``, ``Sampling`` and the results are the neutral contract of ``bpo_local.backend``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generation import BatchGeneration, Generation
    from .model import Engine
    from .system import SystemInfo, physical_cores, system_info

_HOME = {"BatchGeneration": ".generation", "Generation": ".generation", "Engine": ".model",
         "SystemInfo": ".system", "physical_cores": ".system", "system_info": ".system"}
"""Imported on first use: every CLI start reads the buffer policy names in ``.buffers``, and importing a
submodule runs this file, which would otherwise load the whole engine (~80 ms)."""


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BatchGeneration", "Engine", "Generation", "SystemInfo", "physical_cores", "system_info"]
