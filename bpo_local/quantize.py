"""Quantize a GGUF with llama.cpp's own quantizer (``llama_model_quantize``), in a child process.

The child (``_quantize_worker.py``) can be killed at once on Ctrl-C, a crash inside llama.cpp becomes a
one-line error instead of taking the CLI down, and its log lines give per-tensor progress.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConversionError, UsageError

QUANTS = (
    "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0",
    "q4_k_m", "q4_k_s", "q4_1", "q4_0", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
)
"""Output types, named like llama.cpp's ``LLAMA_FTYPE_MOSTLY_*`` (``f32`` is ``LLAMA_FTYPE_ALL_F32``)."""

DEFAULT_QUANTS = ("q4_k_m", "q8_0")

OnTensor = Callable[[str, int, int], None]
"""``on_tensor(name, index, total)``, called as each tensor is written (index counts from 1)."""

_WORKER = Path(__file__).with_name("_quantize_worker.py")
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_SIZE_LINE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")
_ERROR_LINE = re.compile(r"failed to quantize: (.*)")


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
            cause = errors[-1] if errors else f"the quantizer exited with status {child.returncode}"
            raise ConversionError(f"quantizing {src.name} to {quant} failed: {cause}")
        return QuantizeReport(quant, out, out.stat().st_size, bpw)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
