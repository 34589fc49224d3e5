"""Read a GGUF's header alone: scalar/string metadata and the weight count, in milliseconds.

gguf-py's ``GGUFReader`` decodes every array (a 49k-token vocabulary takes seconds); the store needs only
a few keys and the tensor shapes, so this skips arrays without decoding them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, object]
    """Scalar and string values; arrays are left out."""
    n_params: int


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s header; ValueError if it is not a (complete) GGUF header."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = _string(f)
            (kind,) = struct.unpack("<I", _read(f, 4))
            value = _value(f, kind)
            if value is not None:
                metadata[key] = value
        n_params = 0
        for _ in range(n_tensors):
            _string(f)
            (n_dims,) = struct.unpack("<I", _read(f, 4))
            dims = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
            _read(f, 12)  # type, offset
            n_params += prod(dims)
    return GGUFHeader(metadata, n_params)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("truncated GGUF header")
    return data


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return _read(f, n).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> object:
    """The value, or None for an array (skipped)."""
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, count = struct.unpack("<IQ", _read(f, 12))
    if item in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
    else:
        for _ in range(count):
            _value(f, item)
    return None
