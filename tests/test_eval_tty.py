"""`bpo-local eval` at a terminal (a real pseudo-terminal): a progress bar per stage, the table, Ctrl-C."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pexpect
from _cli_helpers import spawn_cli
from conftest import CliRunner
from test_eval import LIMIT, cache_lines, eval_args

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(args: list[str]) -> pexpect.spawn:
    # codec_errors: the terminal echoes ^C into the middle of a bar's multi-byte characters.
    return spawn_cli(*args, codec_errors="replace", timeout=300, dimensions=(40, 160))


def _finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    return ANSI.sub("", child.before).replace("\r", "")


def test_a_bar_per_stage_then_the_table(smollm2_gguf: Path, tmp_path: Path) -> None:
    args = [a for a in eval_args(smollm2_gguf, tmp_path / "out") if a != "--json"]
    screen = _finish(_spawn(args))
    for stage, total in (("optimize", LIMIT), ("answer", None), ("judge", 2 * LIMIT)):
        assert re.search(rf"{stage}\s.*\s(\d+)/\1\s", screen), (stage, screen)  # finished bar: done/total
        if total is not None:
            assert f"{total}/{total}" in screen
    assert "BPO win" in screen and "vicuna_eval" in screen and "Traceback" not in screen


def test_ctrl_c_stops_with_130_and_the_rerun_resumes(smollm2_gguf: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    out = tmp_path / "out"
    args = eval_args(smollm2_gguf, out)
    child = _spawn(args)
    answers = out / "cache" / "answer.jsonl"
    deadline = time.monotonic() + 300
    while not (answers.is_file() and answers.read_text().count("\n") >= 1):
        assert child.isalive() and time.monotonic() < deadline
        time.sleep(0.05)
    child.sendintr()
    screen = _finish(child)
    assert child.exitstatus == 130 and screen.rstrip().endswith("interrupted") and "Traceback" not in screen
    before = cache_lines(out)
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)["stages"]
    assert {stage: c["cached"] for stage, c in stages.items()} == before
    assert stages["optimize"]["computed"] == 0 and stages["answer"]["cached"] >= 1
