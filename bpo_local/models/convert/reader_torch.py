"""PyTorch ``.bin`` reader (torch is an optional extra, imported here only).

Each shard is memory-mapped (``torch.load(mmap=True, weights_only=True)``) and kept open only while
its own tensors are being read; each tensor is copied out and its mapped pages handed back, so
resident memory stays near the tensor in hand.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConversionError
from .reader import SourceTensor

_MADV_DONTNEED = 4
_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def read_torch(file: Path) -> Iterator[SourceTensor]:
    """The tensors of one ``pytorch_model*.bin`` shard, in the order torch lists them."""
    shard = _Shard(file)
    listed = [(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in shard.state().items()]
    shard.close()
    for name, torch_dtype, shape in listed:
        dtype = _DTYPE_NAMES.get(str(torch_dtype).removeprefix("torch."))
        if dtype is None:
            raise ConversionError(f"{file.name}: tensor {name} has unsupported type {torch_dtype}")
        yield SourceTensor(name, shape, dtype, file, lambda n=name: shard.load(n))


class _Shard:
    """One mapped shard, opened on demand and closed once every tensor in it has been loaded."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._state: dict[str, Any] | None = None
        self._mapped = False
        self._unread: set[str] = set()

    def state(self) -> dict[str, Any]:
        if self._state is None:
            self._state, self._mapped = _torch_load(self.file)
            self._unread = set(self._state)
        return self._state

    def load(self, name: str) -> np.ndarray:
        import torch

        tensor = self.state()[name]
        self._unread.discard(name)
        if not self._unread:
            self.close()
        try:
            data = tensor.to(torch.float32) if tensor.dtype not in (torch.float16, torch.float32) else tensor.clone()
            if self._mapped:
                _drop_pages(tensor)
            return data.numpy()
        except RuntimeError as exc:
            raise ConversionError(f"truncated or corrupt weights file {self.file.name}: {exc}") from None

    def close(self) -> None:
        self._state = None


def _drop_pages(tensor: Any) -> None:
    """Let the kernel take back the mapped file pages of a tensor already copied out.

    Without this, every page read stays in this process's resident set until the whole shard is
    closed (~10 GB for a 7B shard). The mapping is file-backed, so a later read is simply re-read.
    """
    if not sys.platform.startswith("linux"):
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    first, last = -(-start // page) * page, (start + tensor.numel() * tensor.element_size()) // page * page
    if last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _torch_load(file: Path) -> tuple[dict[str, Any], bool]:
    """The shard's state dict and whether it is memory-mapped (False for the legacy non-zip format)."""
    try:
        import torch
    except ImportError:
        raise ConversionError(
            "this checkpoint has PyTorch .bin weights; install torch: pip install 'bpo-local[torch]'") from None
    try:
        try:
            state, mapped = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state, mapped = torch.load(str(file), map_location="cpu", weights_only=True), False  # legacy format
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConversionError(f"truncated or corrupt weights file {file.name} ({reason}); download it again") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{file.name} holds no state dict; download the checkpoint again")
    return state, mapped
