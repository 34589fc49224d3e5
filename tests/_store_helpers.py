"""Store-area fixtures: a real F16 GGUF (SmolLM2 dequantized by llama.cpp) and a few BPO eval pairs.

Import the fixtures into a test module: ``from _store_helpers import smollm2_f16, eval_pairs  # noqa: F401``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CACHE


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


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_gguf: Path) -> Path:
    """A real trained model in F16 (its weights are Q4_1-exact, which does not matter here)."""
    return dequantize(smollm2_gguf, CACHE / "smollm2-f16.gguf")


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


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def eval_pairs(bpo_test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short BPO pairs as JSONL: enough for stable numbers, small enough to keep verify fast."""
    records = json.loads(bpo_test_data.read_text(encoding="utf-8"))
    short = [r for r in records if len(r["prompt"]) < 120 and 60 < len(r["optimized_prompt"]) < 200][:4]
    path = tmp_path_factory.mktemp("eval") / "pairs.jsonl"
    path.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "optimized_prompt")}) + "\n"
                            for r in short), encoding="utf-8")
    return path


def store_files(root: Path) -> list[str]:
    """Every file under a store except lock files (which are meant to stay), relative and sorted."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


def start_cli(*args: str) -> subprocess.Popen:
    """``bpo-local ARGS`` in the background (its own process group, so a signal reaches only it)."""
    return subprocess.Popen([sys.executable, "-m", "bpo_local", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
                            start_new_session=True)


def wait_for(predicate, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def kill(proc: subprocess.Popen, sig: signal.Signals) -> str:
    """Send ``sig``, wait for the exit; returns its stderr."""
    os.kill(proc.pid, sig)
    return proc.communicate(timeout=60)[1]
