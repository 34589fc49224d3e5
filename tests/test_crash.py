"""A native crash under the CLI ends as one line and exit code 70; --debug shows the native report."""

from __future__ import annotations

import os
import subprocess
import sys

from bpo_local.crash import EXIT_CRASH

CRASHING_DOCTOR = """
import sys
import bpo_local.cli.doctor as doctor

def crash(args):
    import llama_cpp.llama_cpp as lib
    {how}

doctor.run = crash  # bound when main() builds its parser
from bpo_local.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

NULL_MODEL = "lib.llama_model_n_layer(None)  # llama.cpp dereferences a null model: SIGSEGV"
ASSERT = "lib.llama_backend_init(); import llama_cpp._ggml as g; g.libggml.ggml_abort(b'x.c', 1, b'boom')"


def _run(how: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASHING_DOCTOR.format(how=how), *args, "doctor"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})


def test_a_segfault_in_llama_cpp_is_one_line_and_exit_70() -> None:
    done = _run(NULL_MODEL)
    assert done.returncode == EXIT_CRASH
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: llama.cpp crashed (SIGSEGV); ")


def test_a_ggml_abort_prints_no_backtrace() -> None:
    done = _run(ASSERT)
    assert done.returncode == EXIT_CRASH
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("error: llama.cpp crashed (SIGABRT); ")
    assert len(lines) == 2 and lines[0].endswith("x.c:1: boom")  # ggml's own line, then ours: no gdb dump


def test_debug_leaves_the_crash_native() -> None:
    done = _run(NULL_MODEL, "--debug")
    assert done.returncode == -11
    assert "Fatal Python error: Segmentation fault" in done.stderr
