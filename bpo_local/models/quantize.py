"""Quantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``), in a child process.

The child (``_quantize_worker.py``) can be killed at once on Ctrl-C, a crash inside llama.cpp becomes a
one-line error instead of taking the CLI down, and its log lines give per-tensor progress.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConversionError, UsageError

BITS_PER_WEIGHT = {
    "f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.68, "q5_k_s": 5.52,
    "q5_1": 6.0, "q5_0": 5.5, "q4_k_m": 4.85, "q4_k_s": 4.58, "q4_1": 5.0, "q4_0": 4.5, "q3_k_l": 4.27,
    "q3_k_m": 3.91, "q3_k_s": 3.5, "q2_k": 3.35,
}
"""Output types, named like llama.cpp's ``LLAMA_FTYPE_MOSTLY_*`` (``f32`` is ``LLAMA_FTYPE_ALL_F32``), with
their approximate size on a 7B Llama (small models come out larger: rows too short for K-quants fall back
to bigger types). Used only to refuse a run that cannot fit on the disk before it starts."""

QUANTS = tuple(BITS_PER_WEIGHT)

DEFAULT_QUANTS = ("q4_k_m", "q8_0")

OnTensor = Callable[[str, int, int], None]
"""``on_tensor(name, index, total)``, called as each tensor is written (index counts from 1)."""

_WORKER = Path(__file__).with_name("_quantize_worker.py")
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_SIZE_LINE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")
_ERROR_LINE = re.compile(r"failed to quantize: (.*)")


_LOW_SPACE = 64 << 20


@dataclass(frozen=True)
class QuantizeReport:
    quant: str
    path: Path
    size_bytes: int
    bits_per_weight: float | None


def parse_quants(spec: str) -> tuple[str, ...]:
    """``"Q4_K_M, q8_0"`` -> ``("q4_k_m", "q8_0")``: case-insensitive, duplicates dropped, order kept."""
    names = [part.strip().lower() for part in spec.split(",") if part.strip()]
    if not names:
        raise UsageError(f"no quant type given; choose from: {', '.join(QUANTS)}")
    for name in names:
        if name not in QUANTS:
            raise UsageError(f"unknown quant {name!r}; choose from: {', '.join(QUANTS)}")
    return tuple(dict.fromkeys(names))


def quantize(src: Path, out: Path, quant: str, *, threads: int | None = None,
             on_tensor: OnTensor | None = None) -> QuantizeReport:
    """Write ``src`` (an F32/F16/BF16 GGUF) as ``quant`` to ``out``; ``out`` is removed on any failure.

    ``threads`` None lets llama.cpp use every core.
    """
    if quant not in QUANTS:
        raise UsageError(f"unknown quant {quant!r}; choose from: {', '.join(QUANTS)}")
    need = _estimated_size(src, quant)
    if shutil.disk_usage(out.parent).free < need:
        raise ConversionError(_no_space(out.parent, need))
    command = [sys.executable, str(_WORKER), str(src), str(out), quant, str(threads or 0), str(os.getpid())]
    errors: list[str] = []
    bpw: float | None = None
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              encoding="utf-8", errors="replace") as child:
            try:
                assert child.stdout is not None
                for line in child.stdout:
                    if (match := _TENSOR_LINE.match(line)) and on_tensor:
                        on_tensor(match[3], int(match[1]), int(match[2]))
                    elif match := _SIZE_LINE.search(line):
                        bpw = float(match[2])
                    elif match := _ERROR_LINE.search(line):
                        errors.append(match[1].strip())
                    elif "Traceback" in line or "Error" in line:
                        errors.append(line.strip())
            except BaseException:
                child.send_signal(signal.SIGKILL)
                raise
        if child.returncode != 0:
            if shutil.disk_usage(out.parent).free < _LOW_SPACE:
                raise ConversionError(_no_space(out.parent, need))
            cause = errors[-1] if errors else f"the quantizer exited with status {child.returncode}"
            raise ConversionError(f"quantizing {src.name} to {quant} failed: {cause}")
        return QuantizeReport(quant, out, out.stat().st_size, bpw)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _estimated_size(src: Path, quant: str) -> int:
    """Also refuses a source llama.cpp's loader would abort on (the quantizer loads it the same way)."""
    from ..backends.llamacpp.gguf_check import check_gguf

    try:
        n_params = check_gguf(src).n_params
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{src} is not a sound GGUF ({exc}); convert the checkpoint again") from exc
    return int(n_params * BITS_PER_WEIGHT[quant] / 8)


def _no_space(folder: Path, need: int) -> str:
    free = shutil.disk_usage(folder).free
    return (f"not enough disk space in {folder} to quantize: about {need / 1e9:.2f} GB needed, {free / 1e9:.2f} GB "
            "free; free some space or point BPO_LOCAL_HOME at a larger disk")
