"""A torch-free writer of the zip checkpoints ``torch.save`` writes, for building ``.bin`` test files.

The layout is torch's: ``<archive>/data.pkl`` (pickle protocol 2; each storage a persistent id
``('storage', torch.<Type>Storage, key, 'cpu', numel)``; each tensor a
``torch._utils._rebuild_tensor_v2`` call), ``<archive>/data/<key>`` with the raw elements, the
small ``version``/``byteorder`` records, every record stored uncompressed at a 64-byte boundary.
Values of the state dict that are not ``Tensor`` are pickled as they are (how tests smuggle in
hostile objects).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

_ALIGNMENT = 64


@dataclass(frozen=True, eq=False)
class Storage:
    """One flat run of elements (bf16 as its uint16 bits), shared by every tensor that views it."""

    data: np.ndarray
    type_name: str
    """torch's storage class: ``HalfStorage``, ``BFloat16Storage``, ``FloatStorage``..."""


@dataclass(frozen=True)
class Tensor:
    """A strided view of a storage, counted in elements, as torch pickles it."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce__(self) -> tuple:
        return _global("torch._utils", "_rebuild_tensor_v2"), (
            self.storage, self.offset, self.shape, self.stride, False, OrderedDict())


def tensor(data: np.ndarray, type_name: str) -> Tensor:
    """A contiguous tensor owning a storage of its own."""
    shape = tuple(data.shape)
    stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return Tensor(Storage(np.ascontiguousarray(data).reshape(-1), type_name), 0, shape, stride)


def save(path: Path, state: Mapping[str, object], *, byteorder: str = "little", archive: str | None = None) -> None:
    """Write ``state`` (an ordered state dict) where ``torch.load`` would read it back."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(OrderedDict(state))
    prefix = (archive or path.stem) + "/"
    order = ">" if byteorder == "big" else "<"
    records = [("data.pkl", buffer.getvalue()), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", byteorder.encode())]
    records += [(f"data/{key}", s.data.astype(s.data.dtype.newbyteorder(order)).tobytes())
                for s, key in pickler.keys.items()]
    records.append(("version", b"3\n"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records:
            info = zipfile.ZipInfo(prefix + name, date_time=(1980, 1, 1, 0, 0, 0))
            header_end = zf.fp.tell() + 30 + len(info.filename.encode()) + 4
            pad = -header_end % _ALIGNMENT
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's "FB" padding field
            zf.writestr(info, data)


@dataclass(frozen=True)
class _Global:
    """A global named in the pickle; callable only because pickle insists a reduce function is."""

    module: str
    name: str

    def __call__(self, *args: object) -> None:
        raise TypeError(f"{self.module}.{self.name} is only a name here")


@cache
def _global(module: str, name: str) -> _Global:
    return _Global(module, name)


class _Pickler(pickle._Pickler):
    """The pure-Python pickler, taught to write a global by name without importing it (no torch here)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=2)
        self.keys: dict[Storage, str] = {}

    def persistent_id(self, obj: object) -> tuple | None:
        if not isinstance(obj, Storage):
            return None
        key = self.keys.setdefault(obj, str(len(self.keys)))
        return "storage", _global("torch", obj.type_name), key, "cpu", obj.data.size

    def _save_global_by_name(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global_by_name
