"""The one interface every architecture implements, and the registry keyed by ``architectures[0]``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import gguf
import numpy as np

from ...errors import ConversionError
from .hparams import HParams
from .source import SourceTensor


@dataclass(frozen=True)
class OutputTensor:
    """A GGUF tensor to write: its name, HF-order shape, and how to compute its float data."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    source: str
    """The HF tensor it comes from (for messages and progress)."""


class Architecture(Protocol):
    """Metadata and tensor mapping of one HF architecture; one small module implements each."""

    gguf_arch: gguf.MODEL_ARCH
    llama_vocab_keys: bool
    """Write the tokenizer keys only llama.cpp's Llama converter adds (``add_space_prefix``, ...)."""

    def write_kv(self, hp: HParams, writer: gguf.GGUFWriter) -> None:
        """Add the architecture's hyper-parameter keys (``llama.block_count``...)."""

    def tensors(self, hp: HParams, source: Iterable[SourceTensor]) -> Iterator[OutputTensor]:
        """Map HF tensors to GGUF ones (names, repacking), lazily, skipping the unused."""


_REGISTRY: dict[str, Callable[[], Architecture]] = {}


def register(*hf_names: str) -> Callable[[type], type]:
    """Class decorator: make an architecture class the converter for these HF names."""

    def add(cls: type) -> type:
        for name in hf_names:
            _REGISTRY[name] = cls
        return cls

    return add


def supported() -> list[str]:
    return sorted(_REGISTRY)


def for_hparams(hp: HParams) -> Architecture:
    """The converter for ``hp.architecture``, or a ConversionError listing the supported ones."""
    factory = _REGISTRY.get(hp.architecture)
    if factory is None:
        raise ConversionError(
            f"unsupported architecture {hp.architecture or '(none in config.json)'}; "
            f"supported: {', '.join(supported())}")
    return factory()
