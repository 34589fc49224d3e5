"""bpo-local: BPO (Black-Box Prompt Optimization, Cheng et al. 2023) offline on llama.cpp.

    >>> import bpo_local
    >>> bpo = bpo_local.load("bpo-q4_k_m.gguf")          # or a store name, or None for the default
    >>> bpo.optimize("how can I create a profile on Facebook?").text
    >>> bpo.optimize("...", mode="aggressive").candidates
"""

from __future__ import annotations

__version__ = "0.1.0"

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
from .optimizer import OptimizeResult, Optimizer, load
from .presets import AGGRESSIVE, PRESETS, STABLE, Preset

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
