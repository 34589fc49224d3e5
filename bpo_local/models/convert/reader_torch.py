"""PyTorch ``.bin`` reader without torch: the zip checkpoint ``torch.save`` writes, read safely.

``<archive>/data.pkl`` is unpickled by a restricted unpickler that knows only the few globals a
state dict needs (tensor rebuilds, storage types, ``OrderedDict``) as stand-ins of our own, so
nothing in the pickle ever runs; every other global is refused by name. Persistent ids name the
``<archive>/data/KEY`` members, which torch stores uncompressed: each tensor is a numpy view of the
member's bytes, mapped only while the tensor is copied out, so resident memory stays near the
tensor in hand.
"""

from __future__ import annotations

import _compat_pickle
import io
import mmap
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from ...errors import ConversionError
from .source import SourceTensor, bf16_to_f32

_STORAGE_DTYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
"""torch's legacy storage classes (what ``torch.save`` pickles) -> the element type, safetensors spelling."""
_LOADABLE = {"F64": "f8", "F32": "f4", "F16": "f2", "BF16": "u2"}
"""The element types read, as numpy stores them (bf16 as its bits)."""
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""How a pre-zip ``torch.save`` file starts (after the pickle protocol opcode): its magic number."""
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_CHUNK = 16 << 20
"""Bytes of a tensor copied between two hand-backs of its mapped pages."""
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    """A strided view, counted in elements, of one storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: object, offset: object, shape: object, stride: object, *_: object) -> _Tensor:
    """Stands in for ``torch._utils._rebuild_tensor(_v2)``; extra arguments (grad, hooks) are ignored."""
    if not (isinstance(storage, _Storage) and type(offset) is int and offset >= 0 and _ints(shape)
            and _ints(stride) and len(shape) == len(stride)):
        raise ValueError("malformed tensor record")
    return _Tensor(storage, offset, shape, stride)


def _rebuild_parameter(data: object, *_: object) -> object:
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


def _ints(value: object) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def read_torch(file: Path) -> Iterator[SourceTensor]:
    """The tensors of one ``pytorch_model*.bin`` shard, in the order its state dict lists them."""
    archive = _Archive(file)
    state = _unpickle(file, archive.read("data.pkl"))
    byteorder = ">" if archive.read("byteorder", missing=b"little") == b"big" else "<"
    for name, tensor in state.items():
        dtype = tensor.storage.dtype
        if dtype not in _LOADABLE:
            raise ConversionError(f"{file.name}: tensor {name} has unsupported type {dtype}")
        start, size = archive.member(f"data/{tensor.storage.key}")
        element = np.dtype(byteorder + _LOADABLE[dtype])
        end = 0 if 0 in tensor.shape else tensor.offset + _reach(tensor.shape, tensor.stride) + 1
        numel = tensor.storage.numel
        if size < numel * element.itemsize or end > numel or prod(tensor.shape) > numel:  # last: no broadcast
            raise _corrupt(file, f"tensor {name} does not fit its storage")
        view = _View(file, start + tensor.offset * element.itemsize, element, tensor.shape,
                     tuple(s * element.itemsize for s in tensor.stride), dtype == "BF16")
        yield SourceTensor(name, tensor.shape, dtype, file, view.load)


def _reach(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """How far past its first element the last element of a non-empty view lies, in stride units."""
    return sum((n - 1) * s for n, s in zip(shape, stride))


@dataclass(frozen=True)
class _View:
    """Where one tensor's bytes lie in the file, and how to read them."""

    file: Path
    start: int
    dtype: np.dtype
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    bf16: bool

    def load(self) -> np.ndarray:
        """The tensor copied out as float16/float32 (native order); the mapping is gone on return."""
        out = np.empty(self.shape, np.float32 if self.bf16 or self.dtype.itemsize == 8
                       else self.dtype.newbyteorder("="))
        if out.size == 0:
            return out
        span = _reach(self.shape, self.strides) + self.dtype.itemsize
        base = self.start - self.start % mmap.ALLOCATIONGRANULARITY
        try:
            with open(self.file, "rb") as f, \
                    mmap.mmap(f.fileno(), self.start + span - base, offset=base, access=mmap.ACCESS_READ) as mapped:
                self._copy_into(out, mapped, self.start - base)
        except (OSError, ValueError) as exc:  # the file shrank or vanished since it was listed
            raise _corrupt(self.file, str(exc)) from None
        return out

    def _copy_into(self, out: np.ndarray, mapped: mmap.mmap, at: int) -> None:
        """Copy (bf16 widened exactly, f64 narrowed, byte order made native) a chunk at a time, handing
        each chunk's pages back once copied: mapped pages count as resident until then, and a whole
        tensor of them beside its copy would double the peak. Its views of ``mapped`` die on return."""
        src = np.ndarray(self.shape, self.dtype, mapped, at, self.strides)
        if not src.flags.c_contiguous:  # a strided view (rare): one piece
            out[...] = bf16_to_f32(src) if self.bf16 else src
            return
        flat_src, flat_out, step = src.reshape(-1), out.reshape(-1), _CHUNK // self.dtype.itemsize
        for i in range(0, flat_src.size, step):
            chunk = flat_src[i:i + step]
            flat_out[i:i + step] = bf16_to_f32(chunk) if self.bf16 else chunk
            if _DONTNEED is not None:
                first, end = at + i * self.dtype.itemsize, at + (i + chunk.size) * self.dtype.itemsize
                first -= first % mmap.PAGESIZE
                if (length := end - end % mmap.PAGESIZE - first) > 0:
                    mapped.madvise(_DONTNEED, first, length)


class _Archive:
    """The zip directory of one checkpoint: its record prefix and where each stored record's bytes lie."""

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            with zipfile.ZipFile(file) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as exc:
            raise _not_zip(file, exc) from None
        except OSError as exc:
            raise _corrupt(file, str(exc)) from None
        prefixes = {i.filename[:-len("/data.pkl")] for i in infos if i.filename.count("/") == 1
                    and i.filename.endswith("/data.pkl")}
        if len(prefixes) != 1:
            raise _corrupt(file, "no single <archive>/data.pkl record")
        prefix = prefixes.pop() + "/"
        self._infos = {i.filename[len(prefix):]: i for i in infos if i.filename.startswith(prefix)}
        self._size = file.stat().st_size

    def member(self, name: str) -> tuple[int, int]:
        """The file offset and size of record ``name`` (stored, never compressed)."""
        info = self._infos.get(name)
        if info is None:
            raise _corrupt(self.file, f"no record {name}")
        if info.compress_type != zipfile.ZIP_STORED:
            method = zipfile.compressor_names.get(info.compress_type, str(info.compress_type))
            raise ConversionError(f"{self.file.name}: record {info.filename} is compressed ({method}); "
                                  "PyTorch checkpoints store their records uncompressed")
        with open(self.file, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _corrupt(self.file, f"bad zip header for {info.filename}")
        _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if info.flag_bits & 1 or start + info.file_size > self._size:
            raise _corrupt(self.file, f"record {info.filename} is cut short")
        return start, info.file_size

    def read(self, name: str, missing: bytes | None = None) -> bytes:
        """The bytes of a small record (or ``missing`` where the archive has none)."""
        if missing is not None and name not in self._infos:
            return missing
        start, size = self.member(name)
        with open(self.file, "rb") as f:
            f.seek(start)
            return f.read(size)


class _Unpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED`` globals (to our stand-ins, importing nothing) and storage ids."""

    def __init__(self, file: Path, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.file = file

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            # named as Python 3 would resolve it: protocol 2 spells builtins `__builtin__`, subprocess `commands`
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            raise ConversionError(
                f"refused {self.file.name}: its pickle asks for {module}.{name}, which a state dict of tensors "
                "never needs (nothing of it was run)") from None

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int):
            raise ValueError(f"unknown persistent id {pid!r:.60}")
        return _Storage(pid[2], pid[1].dtype, pid[4])


def _unpickle(file: Path, data: bytes) -> dict[str, _Tensor]:
    try:
        state = _Unpickler(file, data).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError) as exc:
        raise _corrupt(file, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Tensor)
                                              for k, v in state.items()):
        raise ConversionError(f"{file.name} holds no state dict of tensors; download the checkpoint again")
    return state


def _not_zip(file: Path, exc: Exception) -> ConversionError:
    with open(file, "rb") as f:
        head = f.read(16)
    if head[:1] == b"\x80" and head[2:14] == _LEGACY_MAGIC:
        return ConversionError(f"{file.name} is in PyTorch's legacy (pre-1.6) format, which is not read; "
                               "re-save it with a recent torch (torch.save) or use safetensors")
    return _corrupt(file, str(exc))


def _corrupt(file: Path, reason: str) -> ConversionError:
    return ConversionError(f"truncated or corrupt weights file {file.name} ({reason}); download it again")
