"""`bpo-local optimize` at a terminal (a real pseudo-terminal): streaming, Ctrl-C, the empty-store offer."""

from __future__ import annotations

import re
from pathlib import Path

import pexpect
from _cli_helpers import model_args, spawn_cli

from bpo_local.runlog import RunLog

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _spawn(*args: str) -> pexpect.spawn:
    return spawn_cli(*args, timeout=120, dimensions=(24, 120))


def _finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    return ANSI.sub("", child.before).replace("\r", "")


def test_streamed_text_ends_as_the_piped_result(run_cli, smollm2_gguf: Path) -> None:
    opts = model_args(smollm2_gguf, "--max-tokens", "12", "--temperature", "1.2", "--seed", "1", "--no-log")
    piped = run_cli("optimize", "how do I bake bread at home?", *opts)
    assert piped.returncode == 0 and piped.stdout.strip()
    child = _spawn("optimize", "how do I bake bread at home?", *opts)
    screen = _finish(child)
    assert child.exitstatus == 0
    assert screen.endswith(piped.stdout)


def test_ctrl_c_stops_keeps_the_partial_text_and_logs_it_interrupted(smollm2_gguf: Path, bpo_home: Path) -> None:
    # Aggressive mode cannot stop before len(prompt tokens) + 5 new tokens: a long prompt keeps it busy.
    prompt = "summarise the following words: " + "river stone cloud " * 60
    child = _spawn("optimize", prompt, "-a", "-n", "2", *model_args(smollm2_gguf, "--ctx", "1024", "--max-tokens", "400"))
    child.expect("---")
    child.sendintr()
    screen = _finish(child)
    assert child.exitstatus == 130
    assert screen.rstrip().endswith("interrupted") and "Traceback" not in screen
    with RunLog.open(bpo_home / "logs.db") as log:
        (entry,) = log.query()
    assert entry["interrupted"] and entry["mode"] == "aggressive"


def test_empty_store_offers_a_build_and_declining_says_how(bpo_home: Path) -> None:
    child = _spawn("optimize", "hello there")
    child.expect(r"Build it now\?")
    child.sendline("n")
    screen = _finish(child)
    assert child.exitstatus == 2  # no model: something the user can fix (the exit-code rule)
    assert "bpo-local convert" in screen.splitlines()[-1] and "Traceback" not in screen
    assert not (bpo_home / "models").exists() or not any((bpo_home / "models").iterdir())


def test_batch_progress_shows_on_a_terminal(smollm2_gguf: Path, tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("write a haiku\nname three rivers\nplan a picnic\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    child = _spawn("optimize", "--lines", str(source), "--resume", str(out),
                   *model_args(smollm2_gguf, "--max-tokens", "4", "--no-log"))
    child.expect(r"optimizing.*[0-3]/3")
    screen = _finish(child)
    assert child.exitstatus == 0 and "Traceback" not in screen
    assert out.read_text(encoding="utf-8").count("\n") == 3
