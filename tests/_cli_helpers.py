"""Helpers for the `optimize` / `doctor` CLI tests: commands, fast model options, error checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FAST = ("--threads", "1", "--ctx", "512")
"""Model options that keep SmolLM2 runs quick on a busy 2-core machine (one thread: OpenMP threads
spinning against other processes were 5-8x slower)."""


def model_args(gguf: Path, *extra: str) -> tuple[str, ...]:
    return ("--model", str(gguf), *FAST, *extra)


def cli_command(*args: str) -> list[str]:
    """``bpo-local ARGS`` as an argv: the one way the suite launches the CLI (run, Popen, pexpect)."""
    return [sys.executable, "-m", "bpo_local", *args]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a CLI run gets: the suite's, without colour, plus ``env``."""
    return {**os.environ, "NO_COLOR": "1", **(env or {})}


def spawn_cli(*args: str, env: dict[str, str] | None = None, **options: Any) -> Any:
    """``bpo-local ARGS`` in a pseudo-terminal (pexpect, text mode); ``options`` go to ``pexpect.spawn``."""
    import pexpect

    command = cli_command(*args)
    return pexpect.spawn(command[0], command[1:], env=cli_env(env), encoding="utf-8", **options)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The run failed with ``code``, printed nothing on stdout and said why on one stderr line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert not proc.stdout, proc.stdout
    return assert_error_line(proc.stderr, *fragments)


def assert_error_line(stderr: str | bytes, *fragments: str) -> str:
    """``stderr`` is exactly one ``error: ...`` line holding every fragment, and no traceback."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def with_chat_template(source: Path, target: Path, template: str) -> Path:
    """A copy of the GGUF ``source`` whose ``tokenizer.chat_template`` is ``template`` (as gguf-py's
    gguf_new_metadata script does it)."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, arch=reader.get_field("general.architecture").contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "tokenizer.chat_template"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_chat_template(template)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return target
