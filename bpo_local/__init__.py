"""bpo-local: BPO (Black-Box Prompt Optimization, Cheng et al. 2023) offline on llama.cpp.

    >>> import bpo_local
    >>> bpo = bpo_local.load("bpo-q4_k_m.gguf")          # or a store name, or None for the default
    >>> bpo.optimize("how can I create a profile on Facebook?").text
    >>> bpo.optimize("...", mode="aggressive").candidates
    >>> bpo.optimize("...", mode="pas").text             # any preset: stable, aggressive, pas, mepo, yours
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    BpoLocalError,
    ConversionError,
    DownloadError,
    GenerationError,
    ModelLoadError,
    ModelNotFound,
    PromptTooLong,
    StoreError,
    UsageError,
)
from .presets import AGGRESSIVE, BUILTIN, MEPO, PAS, PRESETS, STABLE, Preset
from .version import __version__

if TYPE_CHECKING:
    from .open import connect, load
    from .optimizer import Optimizer, OptimizeResult

_LAZY = {"OptimizeResult": ".optimizer", "Optimizer": ".optimizer", "load": ".open", "connect": ".open"}
"""Imported on first use: opening BPO pulls in the config, the store and the engine package, which every
CLI start (``bpo-local --help`` included) would otherwise pay for."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGGRESSIVE",
    "BUILTIN",
    "MEPO",
    "PAS",
    "PRESETS",
    "STABLE",
    "BpoLocalError",
    "ConversionError",
    "DownloadError",
    "GenerationError",
    "ModelLoadError",
    "ModelNotFound",
    "OptimizeResult",
    "Optimizer",
    "Preset",
    "PromptTooLong",
    "StoreError",
    "UsageError",
    "__version__",
    "connect",
    "load",
]
