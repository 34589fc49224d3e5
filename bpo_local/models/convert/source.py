"""What every checkpoint reader yields: a lazy tensor, and the bfloat16 widening they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the checkpoint; nothing is read until ``load()``.

    ``load()`` returns float16 or float32 data in HF layout (bfloat16 is widened to float32 exactly).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    """The stored type in safetensors spelling: ``F32``, ``F16``, ``BF16``..."""
    file: Path
    load: Callable[[], np.ndarray]
    data_offset: int | None = None
    """Where the stored bytes start in ``file`` when they lie there as one little-endian run in
    ``dtype`` (``load()`` then only reinterprets them); None when reading means decoding."""


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly, without torch."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
