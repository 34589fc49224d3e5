"""HF checkpoint -> GGUF (F32/F16/BF16) converter.

``fetch_source`` brings a checkpoint folder (from the Hub or a local path); ``convert_checkpoint``
writes it as one GGUF. Adding an architecture is one module with an ``Architecture`` class
registered under its ``config.json`` name (see ``llama.py``).
"""

from . import llama, mistral, qwen2  # noqa: F401  (each architecture registers itself)
from .arch import Architecture
from .arch import supported as supported_architectures
from .checkpoint import OUTTYPES, ConversionReport, TensorCallback, convert_checkpoint
from .hparams import HParams
from .hub import DEFAULT_SOURCE, Progress, SourceCheckout, fetch_source

__all__ = [
    "DEFAULT_SOURCE",
    "OUTTYPES",
    "Architecture",
    "ConversionReport",
    "HParams",
    "Progress",
    "SourceCheckout",
    "TensorCallback",
    "convert_checkpoint",
    "fetch_source",
    "supported_architectures",
]
