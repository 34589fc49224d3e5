"""safetensors reader: parses the header itself and reads one tensor at a time (no torch, no mmap).

Reading with ``np.fromfile`` instead of mapping the file keeps the resident memory at the size of
the tensor in hand, not of every page touched so far.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from math import prod
from pathlib import Path

import numpy as np

from ...errors import ConversionError
from .source import SourceTensor, bf16_to_f32

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(file: Path) -> Iterator[SourceTensor]:
    """The tensors of one ``.safetensors`` file, in the order they are stored."""
    header, data_start = _read_header(file)
    size = file.stat().st_size
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in entries:
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in _DTYPES:
            raise ConversionError(f"{file.name}: tensor {name} has unsupported type {dtype}")
        if end - begin != prod(shape) * _DTYPES[dtype].itemsize or data_start + end > size:
            raise ConversionError(f"truncated or corrupt weights file {file.name}: download it again")
        offset = data_start + begin
        yield SourceTensor(name, shape, dtype, file,
                           lambda f=file, o=offset, d=dtype, s=shape: _load(f, o, d, s), offset)


def _read_header(file: Path) -> tuple[dict, int]:
    corrupt = ConversionError(f"truncated or corrupt weights file {file.name}: download it again")
    try:
        with open(file, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise corrupt
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise corrupt
            text = f.read(n)
        header = json.loads(text)
        if not isinstance(header, dict):
            raise corrupt
        for key, info in header.items():
            if key != "__metadata__" and not (
                    isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= info.keys()):
                raise corrupt
    except (UnicodeDecodeError, ValueError):
        raise corrupt from None
    return header, 8 + n


def _load(file: Path, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = prod(shape)
    with open(file, "rb") as f:
        f.seek(offset)
        data = np.fromfile(f, dtype=_DTYPES[dtype], count=count)
    if data.size != count:
        raise ConversionError(f"truncated or corrupt weights file {file.name}: download it again")
    if dtype == "BF16":
        data = bf16_to_f32(data)
    elif dtype == "F64":
        data = data.astype(np.float32)
    return data.reshape(shape)
