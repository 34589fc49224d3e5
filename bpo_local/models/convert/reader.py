"""Find a checkpoint's weight files and list their tensors lazily, whatever the file format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ...errors import ConversionError
from .source import SourceTensor


SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"


def weight_files(checkpoint: Path) -> tuple[list[Path], set[str] | None]:
    """The weight files to read (safetensors preferred; shards as their index lists them) and the
    tensor names that index lists (None without an index)."""
    for index_name, pattern in ((SAFETENSORS_INDEX, "model*.safetensors"), (TORCH_INDEX, "pytorch_model*.bin")):
        index = checkpoint / index_name
        if index.is_file():
            weight_map = _load_index(index)
            return [checkpoint / part for part in sorted(set(weight_map.values()))], set(weight_map)
        parts = sorted(checkpoint.glob(pattern))
        if parts:
            return parts, None
    raise ConversionError(
        f"no weights in {checkpoint}: expected model.safetensors or pytorch_model.bin (or their shards)")


def read_tensors(checkpoint: Path) -> Iterator[SourceTensor]:
    """Every tensor of the checkpoint, file by file, in file order; data stays on disk until loaded."""
    files, expected = weight_files(checkpoint)
    for file in files:
        if not file.is_file():
            raise ConversionError(f"missing weight shard {file.name} in {checkpoint}: download it again")
    if files[0].suffix == ".safetensors":
        from .reader_safetensors import read_safetensors as read
    else:
        from .reader_torch import read_torch as read
    seen: set[str] = set()
    for file in files:
        for tensor in read(file):
            seen.add(tensor.name)
            yield tensor
    if expected is not None and (missing := expected - seen):
        raise ConversionError(
            f"weights incomplete: {len(missing)} tensor(s) listed in the index are in no shard "
            f"(e.g. {sorted(missing)[0]}); download the checkpoint again")


def _load_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ConversionError(f"corrupt weights index {index.name}: download the checkpoint again") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"corrupt weights index {index.name}: download the checkpoint again")
    return weight_map

