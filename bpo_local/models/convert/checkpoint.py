"""Convert an HF checkpoint folder to one GGUF file (F32/F16/BF16), streaming tensor by tensor.

The header, metadata and tensor table are written first from the files' headers alone; then each
tensor is loaded, converted, written and dropped, so memory stays at a few of the largest tensors.
A tensor the architecture passes through unchanged and that is stored in the output type is
copied from its file without decoding (``sink.py`` says how: in the kernel through the page cache,
or straight to the disk when the output is too large for the page cache to absorb).
The file appears only when complete (temp file in the same folder + ``os.replace``). It is not
fsynced: as with llama.cpp's converter the kernel writes back what is still dirty while the caller
goes on; waiting for that here would cost seconds that only a caller keeping the file, and needing
it to survive a power cut, should pay.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from math import prod
from pathlib import Path

import gguf
import numpy as np

from ...errors import ConversionError, NoDiskSpace
from .arch import Architecture, OutputTensor, for_hparams
from .hparams import HParams
from .reader import read_tensors
from .sink import Sink, TruncatedSource, open_sink
from .source import SourceTensor
from .vocab import Vocab, load_vocab

TensorCallback = Callable[[str, int, int], None]

OUTTYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
}
_BYTES_PER_VALUE = {gguf.GGMLQuantizationType.F32: 4, gguf.GGMLQuantizationType.F16: 2,
                    gguf.GGMLQuantizationType.BF16: 2}
_BLOCK_BYTES = 8 * 1024 * 1024
_STORED_AS = {gguf.GGMLQuantizationType.F32: "F32", gguf.GGMLQuantizationType.F16: "F16"}
"""Output types whose GGUF bytes equal the safetensors bytes of that stored type."""
_HEADROOM = 4 * 1024 * 1024
"""Room for the header, metadata and vocabulary on top of the tensor data."""


@dataclass(frozen=True)
class ConversionReport:
    """What was written."""

    path: Path
    architecture: str
    outtype: str
    n_tensors: int
    n_params: int
    size_bytes: int
    vocab_size: int
    tokenizer: str
    """``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE)."""
    source_dtype: str | None
    """The checkpoint's precision per config.json (``float16``, ``bfloat16``...), if stated."""
    written: str
    """How the tensor bytes went to the disk and why (the page cache or ``O_DIRECT``; see ``sink``)."""


@dataclass(frozen=True)
class _Planned:
    tensor: OutputTensor
    qtype: gguf.GGMLQuantizationType
    stored: SourceTensor | None
    """The source tensor whose bytes on disk are already this tensor's GGUF data, if any."""

    @property
    def nbytes(self) -> int:
        return prod(self.tensor.shape) * _BYTES_PER_VALUE[self.qtype]


def convert_checkpoint(src: Path, out: Path, *, outtype: str = "f16", name: str | None = None,
                       extra_metadata: dict[str, object] | None = None, chat_template: str | None = None,
                       on_tensor: TensorCallback | None = None) -> ConversionReport:
    """Write ``src`` (an HF checkpoint folder) as a GGUF at ``out``.

    ``extra_metadata`` adds KV pairs (str, bool, int, float or lists of them); ``chat_template``
    replaces the checkpoint's own ``tokenizer.chat_template``; ``on_tensor(name, index, total)``
    is called before each tensor's data is written.
    """
    with _quiet_gguf():
        return _convert(Path(src), Path(out), outtype, name, extra_metadata, chat_template, on_tensor)


def _convert(src: Path, out: Path, outtype: str, name: str | None, extra_metadata: dict[str, object] | None,
             chat_template: str | None, on_tensor: TensorCallback | None) -> ConversionReport:
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown outtype {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    if not src.is_dir():
        raise ConversionError(f"checkpoint folder {src} does not exist")
    file_type, default_qtype = OUTTYPES[outtype]
    hp = HParams.load(src)
    arch = for_hparams(hp)
    vocab = load_vocab(src, hp.vocab_size)
    plan = _plan(hp, arch, src, default_qtype)
    names = [p.tensor.name for p in plan]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConversionError(f"tensor {twice} appears twice in the checkpoint's weight files; re-download it")
    embd = next((p.tensor for p in plan if p.tensor.name == "token_embd.weight"), None)
    if embd is not None and embd.shape[0] != len(vocab.tokens):
        raise ConversionError(f"config.json vocab_size is {hp.vocab_size} but the embedding has {embd.shape[0]} "
                              "rows; the checkpoint's files do not belong together")
    n_params = sum(prod(p.tensor.shape) for p in plan)
    writer = _header(hp, arch, vocab, plan, name=name or src.name, n_params=n_params, file_type=file_type,
                     chat_template=chat_template, extra_metadata=extra_metadata or {})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    _check_free_space(out.parent, sum(p.nbytes for p in plan) + _HEADROOM, outtype)
    written = _write_atomically(writer, plan, out, outtype, on_tensor)
    return ConversionReport(path=out, architecture=hp.architecture, outtype=outtype, n_tensors=len(plan),
                            n_params=n_params, size_bytes=out.stat().st_size, vocab_size=len(vocab.tokens),
                            tokenizer=vocab.model, source_dtype=hp.dtype, written=written)


def _header(hp: HParams, arch: Architecture, vocab: Vocab, plan: list[_Planned], *, name: str, n_params: int,
            file_type: gguf.LlamaFileType, chat_template: str | None,
            extra_metadata: dict[str, object]) -> gguf.GGUFWriter:
    """A writer holding every KV pair and the tensor table; tensor data comes later."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(gguf.size_label(n_params, n_params, 0, 0))
    arch.write_kv(hp, writer)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.write(writer, chat_template, llama_keys=arch.llama_vocab_keys)
    for key, value in extra_metadata.items():
        writer.add_key_value(key, value, _value_type(value))
    for p in plan:
        writer.add_tensor_info(p.tensor.name, p.tensor.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    return writer


def _plan(hp: HParams, arch: Architecture, src: Path, default_qtype: gguf.GGMLQuantizationType) -> list[_Planned]:
    """Every output tensor with its type and, where its data is a source's stored bytes, that source."""
    sources: dict[str, SourceTensor] = {}

    def listed() -> Iterator[SourceTensor]:
        for tensor in read_tensors(src):
            sources[tensor.name] = tensor
            yield tensor

    plan = []
    for tensor in arch.tensors(hp, listed()):
        qtype = _qtype(tensor, default_qtype)
        plan.append(_Planned(tensor, qtype, _stored(tensor, sources.get(tensor.source), qtype)))
    return plan


def _stored(tensor: OutputTensor, source: SourceTensor | None, qtype: gguf.GGMLQuantizationType) -> SourceTensor | None:
    """``source`` if its bytes on disk are ``tensor``'s GGUF data, else None.

    An output whose loader is its source's own ``load`` is that tensor unchanged (Llama passes all
    but q/k through so); any other loader means the data is computed.
    """
    if (source is None or tensor.load is not source.load or source.data_offset is None
            or source.shape != tensor.shape or source.dtype != _STORED_AS.get(qtype)):
        return None
    return source


@contextmanager
def _quiet_gguf() -> Iterator[None]:
    """gguf-py logs heuristics warnings (tokenizer templates, endianness) that users cannot act on."""
    log = logging.getLogger("gguf")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _qtype(tensor: OutputTensor, default: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """Norms, 1-D tensors and non-weights stay F32, as llama.cpp's converter and quantizer expect."""
    if len(tensor.shape) <= 1 or tensor.name.endswith("_norm.weight") or not tensor.name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return default


def _write_atomically(writer: gguf.GGUFWriter, plan: list[_Planned], out: Path, outtype: str,
                      on_tensor: TensorCallback | None) -> str:
    """Write the GGUF at ``out`` (whole or not at all); how its tensor bytes were written (``Sink.how``)."""
    tmp = out.parent / f".{out.name}.{os.getpid()}.partial"
    sink: Sink | None = None
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None and len(writer.fout) == 1
        sink = open_sink(writer.fout[0], tmp, sum(p.nbytes for p in plan))
        for index, p in enumerate(plan):
            if on_tensor is not None:
                on_tensor(p.tensor.name, index, len(plan))
            _pad(sink, writer.data_alignment)
            _write_tensor(sink, p)
        _pad(sink, writer.data_alignment)
        sink.close()
        writer.close()
        os.replace(tmp, out)
        return sink.how
    except OSError as exc:
        _discard(writer, sink, tmp)
        if exc.errno == errno.ENOSPC or shutil.disk_usage(out.parent).free < _HEADROOM:  # numpy drops errno
            need = sum(p.nbytes for p in plan) + _HEADROOM
            raise _no_space(out.parent, need, outtype) from None
        raise ConversionError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(writer, sink, tmp)
        raise


def _discard(writer: gguf.GGUFWriter, sink: Sink | None, tmp: Path) -> None:
    if sink is not None:
        sink.abort()
    with suppress(OSError):  # flushing what is left fails again on a full disk; the file is closed anyway
        writer.close()
    tmp.unlink(missing_ok=True)


def _write_tensor(sink: Sink, p: _Planned) -> None:
    """Append ``p``'s data: its stored bytes where they are its GGUF data, else converted."""
    start = sink.tell()
    if p.stored is not None:
        assert p.stored.data_offset is not None
        with open(p.stored.file, "rb", buffering=0) as f:
            try:
                sink.copy(f.fileno(), p.stored.data_offset, p.nbytes)
            except TruncatedSource:
                raise ConversionError(f"truncated or corrupt weights file {p.stored.file.name}: "
                                      "download it again") from None
    else:
        for block in _converted_blocks(p):
            sink.write(memoryview(block).cast("B"))
    if sink.tell() - start != p.nbytes:
        raise ConversionError(f"tensor {p.tensor.source} converted to {sink.tell() - start} bytes, "
                              f"expected {p.nbytes}: please report this bug")


def _converted_blocks(p: _Planned) -> Iterator[np.ndarray]:
    """The tensor in the output type, converted a block of rows at a time (bounds the extra memory)."""
    data = p.tensor.load()
    if tuple(data.shape) != p.tensor.shape:
        raise ConversionError(f"tensor {p.tensor.source} has shape {data.shape}, expected {p.tensor.shape}")
    rows = max(1, _BLOCK_BYTES // max(1, data[:1].nbytes))
    for start in range(0, len(data), rows):
        yield gguf.quants.quantize(np.ascontiguousarray(data[start:start + rows]), p.qtype)


def _pad(sink: Sink, alignment: int) -> None:
    """GGUF tensor data starts (and the file ends) on ``alignment`` boundaries, zero-filled."""
    sink.write(b"\0" * (-sink.tell() % alignment))


def _check_free_space(folder: Path, need: int, outtype: str) -> None:
    if shutil.disk_usage(folder).free < need:
        raise _no_space(folder, need, outtype)


def _no_space(folder: Path, need: int, outtype: str) -> ConversionError:
    return NoDiskSpace(folder, need, outtype)


def _value_type(value: object) -> gguf.GGUFValueType:
    if isinstance(value, int) and not isinstance(value, bool) and not -2**31 <= value < 2**31:
        return gguf.GGUFValueType.INT64
    try:
        return gguf.GGUFValueType.get_type(value)
    except ValueError:
        raise ConversionError(f"metadata value {value!r} has unsupported type {type(value).__name__}") from None
