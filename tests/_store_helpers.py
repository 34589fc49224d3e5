"""Store-area helpers (dequantize, a tiny GGUF writer, store listings, background CLI runs); the fixtures
The fixtures themselves (``smollm2_f16``, ``tiny_gguf``, ``eval_pairs``) live in conftest.py.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from _cli_helpers import cli_command, cli_env


def dequantize(src: Path, out: Path) -> Path:
    """``src`` rewritten as F16 by llama.cpp's quantizer (requantize allowed), cached at ``out``."""
    if out.is_file():
        return out
    import llama_cpp.llama_cpp as lib

    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.ftype = lib.LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    params.nthread = 2
    partial = out.with_suffix(".partial")
    assert lib.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params)) == 0
    partial.replace(out)
    return out


def write_tiny_gguf(path: Path, *, file_type: int = 1) -> Path:
    """A few-KB GGUF (two tensors, some metadata): enough for store tests, not for loading."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_file_type(file_type)
    writer.add_token_list(["<s>", "</s>", "a"])
    writer.add_string("general.source.repository", "THUDM/BPO")
    writer.add_tensor("token_embd.weight", np.ones((3, 8), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def store_files(root: Path) -> list[str]:
    """Every file under a store except lock files (which are meant to stay), relative and sorted."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


def start_cli(*args: str) -> subprocess.Popen:
    """``bpo-local ARGS`` in the background (its own process group, so a signal reaches only it)."""
    return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)


def wait_for(predicate, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def kill(proc: subprocess.Popen, sig: signal.Signals) -> str:
    """Send ``sig``, wait for the exit; returns its stderr."""
    os.kill(proc.pid, sig)
    return proc.communicate(timeout=60)[1]
