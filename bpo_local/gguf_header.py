"""Read a GGUF's header: metadata, array locations and tensor infos, checked as llama.cpp's gguf.cpp checks them.

gguf-py's ``GGUFReader`` decodes every array (a 49k-token vocabulary takes seconds); this walks the header
over a memory map, leaves arrays where they lie (``GGUFFile.byte_strings`` reads one on demand) and refuses,
with a ``ValueError`` naming the fact, whatever gguf.cpp would refuse, plus data that lies past the file's end.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_LENGTH = 1 << 30
"""GGUF_MAX_STRING_LENGTH and GGUF_MAX_ARRAY_ELEMENTS in gguf.cpp."""
_MAX_DIMS, _MAX_NAME, _DEFAULT_ALIGNMENT = 4, 64, 32

GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66),
    17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54),
    35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18), 42: (64, 18),
}
"""ggml type id -> (elements per block, bytes per block) of the bundled ggml; other ids are not types."""


@dataclass(frozen=True)
class GGUFArray:
    item_type: int
    count: int
    offset: int
    """File offset of the first item."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    """Offset in the data section."""

    @property
    def n_bytes(self) -> int:
        block, size = GGML_BLOCKS[self.ggml_type]
        return prod(self.shape) // block * size


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    size: int
    metadata: dict[str, object]
    """Scalar and string values."""
    arrays: dict[str, GGUFArray]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def n_params(self) -> int:
        return sum(prod(t.shape) for t in self.tensors)

    def byte_strings(self, key: str) -> list[bytes]:
        """The string array ``key``, undecoded (llama.cpp compares the bytes and never checks the UTF-8)."""
        array = self.arrays[key]
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos, out = array.offset, []
            for _ in range(array.count):
                (n,) = struct.unpack_from("<Q", buf, pos)
                out.append(buf[pos + 8:pos + 8 + n])
                pos += 8 + n
        return out


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, object]
    """Scalar and string values; arrays are left out."""
    n_params: int


def read_header(path: Path) -> GGUFHeader:
    """``path``'s metadata and weight count; ValueError if it is not a sound GGUF."""
    gguf = read_gguf(path)
    return GGUFHeader(gguf.metadata, gguf.n_params)


def read_gguf(path: Path) -> GGUFFile:
    """Parse and check ``path``'s header; ValueError naming the first thing gguf.cpp would refuse."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        size = f.seek(0, 2)
        if size < 24:
            raise ValueError(f"truncated GGUF header (ends at byte {size})")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Parser(buf, size).file(Path(path))


class _Parser:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str) -> tuple:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise ValueError(f"truncated GGUF header (ends at byte {self.size})")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return values

    def string(self, what: str) -> str:
        (n,) = self.take("<Q")
        if n > _MAX_LENGTH or self.pos + n > self.size:
            raise ValueError(f"{what} is {n} bytes long at byte {self.pos - 8}, past the end of the file")
        text = self.buf[self.pos:self.pos + n]
        self.pos += n
        return text.decode("utf-8", "replace")

    def file(self, path: Path) -> GGUFFile:
        self.pos = 4
        version, n_tensors, n_kv = self.take("<Iqq")
        if version in (0, 1) or version > 3 or version & 0xFFFF == 0:
            raise ValueError(f"GGUF version {version} is not supported (llama.cpp reads 2 and 3)")
        if not 0 <= n_kv <= self.size // 12 or not 0 <= n_tensors <= self.size // 24:
            raise ValueError(f"the header counts {n_kv} metadata keys and {n_tensors} tensors, more than "
                             f"a {self.size}-byte file can hold")
        metadata, arrays, kinds = self.metadata(n_kv)
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if kinds.get("general.alignment", 4) != 4 or not alignment or alignment & (alignment - 1):  # type: ignore
            raise ValueError("general.alignment is not a power of 2 of type uint32")
        tensors = self.tensors(n_tensors)
        data_offset = self.pos + (-self.pos % alignment) if n_tensors else self.pos
        expected = 0
        for t in tensors:
            if t.offset != expected:
                raise ValueError(f"tensor {t.name} starts at data offset {t.offset}, expected {expected}")
            expected += t.n_bytes + (-t.n_bytes % alignment)
            if data_offset + t.offset + t.n_bytes > self.size:
                raise ValueError(f"tensor {t.name} ends at byte {data_offset + t.offset + t.n_bytes}, past the end "
                                 f"of the {self.size}-byte file")
        return GGUFFile(path, self.size, metadata, arrays, tuple(tensors), data_offset)

    def metadata(self, n_kv: int) -> tuple[dict[str, object], dict[str, GGUFArray], dict[str, int]]:
        """Scalar and string values, arrays, and every key's value type."""
        metadata: dict[str, object] = {}
        arrays: dict[str, GGUFArray] = {}
        kinds: dict[str, int] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key {i}")
            if not key:
                raise ValueError(f"metadata key {i} is empty")
            if key in kinds:
                raise ValueError(f"metadata key {key} appears twice")
            (kind,) = self.take("<I")
            kinds[key] = kind
            if kind == _ARRAY:
                item, count = self.take("<IQ")
                arrays[key] = GGUFArray(item, count, self.pos)
                self.skip_array(key, item, count)
            elif kind == _STRING:
                metadata[key] = self.string(f"the value of {key}")
            elif kind in _SCALARS:
                (metadata[key],) = self.take(_SCALARS[kind])
            else:
                raise ValueError(f"metadata key {key} has unknown value type {kind}")
        return metadata, arrays, kinds

    def skip_array(self, key: str, item: int, count: int) -> None:
        if count > _MAX_LENGTH:
            raise ValueError(f"array {key} counts {count} items, more than llama.cpp accepts")
        if item in _SCALARS:
            end = self.pos + struct.calcsize(_SCALARS[item]) * count
            if end > self.size:
                raise ValueError(f"array {key} of {count} items runs past the end of the file")
            self.pos = end
        elif item == _STRING:
            if self.pos + 8 * count > self.size:
                raise ValueError(f"array {key} of {count} strings runs past the end of the file")
            buf, pos, size, unpack = self.buf, self.pos, self.size, struct.Struct("<Q").unpack_from
            for i in range(count):
                if pos + 8 > size:
                    raise ValueError(f"string {i} of array {key} runs past the end of the file")
                (n,) = unpack(buf, pos)
                pos += 8 + n
            if pos > size:
                raise ValueError(f"the last string of array {key} runs past the end of the file")
            self.pos = pos
        else:
            raise ValueError(f"array {key} has unknown item type {item}")

    def tensors(self, n_tensors: int) -> list[TensorInfo]:
        tensors: list[TensorInfo] = []
        names: set[str] = set()
        for i in range(n_tensors):
            name = self.string(f"the name of tensor {i}")
            if len(name.encode()) >= _MAX_NAME:
                raise ValueError(f"tensor {i}'s name is {len(name.encode())} bytes long (llama.cpp's limit is 63)")
            if name in names:
                raise ValueError(f"tensor {name} appears twice")
            names.add(name)
            (n_dims,) = self.take("<I")
            if n_dims > _MAX_DIMS:
                raise ValueError(f"tensor {name} has {n_dims} dimensions (at most {_MAX_DIMS})")
            shape = self.take(f"<{n_dims}q")
            ggml_type, offset = self.take("<iQ")
            if any(d <= 0 for d in shape) or prod(shape) >= 2**63:
                raise ValueError(f"tensor {name} has an impossible shape {list(shape)}")
            if ggml_type not in GGML_BLOCKS:
                raise ValueError(f"tensor {name} has unknown ggml type {ggml_type}")
            if shape and shape[0] % GGML_BLOCKS[ggml_type][0]:
                raise ValueError(f"tensor {name}'s rows of {shape[0]} are not a whole number of type "
                                 f"{ggml_type} blocks")
            tensors.append(TensorInfo(name, tuple(shape), ggml_type, offset))
        return tensors

