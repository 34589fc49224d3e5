"""bpo-local: BPO (Black-Box Prompt Optimization, Cheng et al. 2023) offline on llama.cpp.

    >>> import bpo_local
    >>> bpo = bpo_local.load("bpo-q4_k_m.gguf")          # or a store name, or None for the default
    >>> bpo.optimize("how can I create a profile on Facebook?").text
    >>> bpo.optimize("...", mode="aggressive").candidates
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
from .presets import AGGRESSIVE, PRESETS, STABLE, Preset
from .version import __version__

if TYPE_CHECKING:
    from .optimizer import Optimizer, OptimizeResult, load

_LAZY = ("OptimizeResult", "Optimizer", "load")
"""Imported from ``.optimizer`` on first use: it pulls in the engine package, which every CLI start
(``bpo-local --help`` included) would otherwise pay for through ``bpo_local.__version__``."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(".optimizer", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGGRESSIVE",
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
    "load",
]
