"""`bpo-local repl` driven as a user drives it: a pseudo-terminal, keys typed, the screen read back.

The SmolLM2 GGUF stands in for BPO; tiny /max values keep every turn short.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _repl_helpers import ReplProcess

from bpo_local.repl.commands import COMMANDS
from bpo_local.runlog import RunLog

Start = Callable[..., ReplProcess]


@pytest.fixture
def start(smollm2_gguf: Path) -> Iterator[Start]:
    """Start a REPL on SmolLM2 (2 threads) and wait for its first prompt."""
    started: list[ReplProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ReplProcess:
        repl = ReplProcess("--model", str(smollm2_gguf), "--threads", "2", *args, env=env)
        started.append(repl)
        repl.wait_prompt()
        return repl

    yield start
    for repl in started:
        repl.close()


def _logged() -> list[dict]:
    """Run-log entries, oldest first."""
    with RunLog.open() as log:
        return list(reversed(log.query(limit=None)))


def _exit_with(repl: ReplProcess, line: str) -> int:
    repl.send(line + "\r")
    return repl.wait_exit()


def test_banner_turns_stats_and_run_log(start: Start, smollm2_gguf: Path, run_cli) -> None:
    repl = start()
    banner = repl.transcript
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in banner and "Q4_1" in banner
    assert "CPU, 0/30 layers offloaded" in banner and "4096 tokens" in banner and "logs.db" in banner
    assert "max_tokens     6         set" in repl.run("/max 6")
    repl.run("/seed 11")
    first = repl.run("how do I bake bread")
    assert "╭─ optimized ─" in first
    repl.run("how do I bake bread")
    stats = repl.run("/stats")
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in stats.splitlines()
            if re.match(r"│ +[12] │", line)]
    assert [row[0] for row in rows] == ["1", "2"]
    prompt_tokens, cached = int(rows[1][1]), int(rows[1][2])
    assert rows[0][2] == "0" and cached == prompt_tokens - 1  # turn two reuses the template prefix
    assert repl.exit() == 0

    entries = _logged()
    assert [e["prompt"] for e in entries] == ["how do I bake bread"] * 2
    e = entries[0]
    assert e["mode"] == "stable" and e["params"]["max_tokens"] == 6 and e["seed"] == 11
    assert e["model"] == smollm2_gguf.name and not e["interrupted"]
    assert e["model_sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert entries[1]["timings"]["cached_prompt_tokens"] == cached
    assert e["output"] in first
    exported = [json.loads(line) for line in run_cli("log", "--jsonl").stdout.splitlines()]
    assert [x["id"] for x in exported] == [x["id"] for x in entries]


def test_aggressive_candidates_pick_diff_save_and_use(start: Start, tmp_path: Path) -> None:
    repl = start()
    for line in ("/mode aggressive", "/n 3", "/max 6", "/seed 5"):
        repl.run(line)
    shown = repl.run("write a haiku about rain")
    assert all(f"╭─ {i} ─" in shown for i in (1, 2, 3))
    repl.run(f"/save {tmp_path / 'session.jsonl'}")
    (saved,) = [json.loads(line) for line in (tmp_path / "session.jsonl").read_text().splitlines()]
    assert saved["mode"] == "aggressive" and len(saved["candidates"]) == 3 and saved["picked"] == 1
    pick = max(range(3), key=lambda i: (bool(saved["candidates"][i].strip()), i == 1))
    chosen = saved["candidates"][pick]

    assert f"╭─ {pick + 1} (picked) ─" in repl.run(f"/pick {pick + 1}")
    assert "pick a candidate between 1 and 3" in repl.run("/pick 4")
    diff = repl.run("/diff")
    assert all(word in diff for word in ["write", "haiku", "rain", *chosen.split()])
    repl.run(f"/save {tmp_path / 'session.md'}")
    markdown = (tmp_path / "session.md").read_text()
    assert "## Turn 1: aggressive" in markdown and "write a haiku about rain" in markdown
    assert f"### Candidate {pick + 1} (picked)\n\n{chosen}\n" in markdown

    assert "in the input line" in repl.run("/use")
    repl.run("")  # Enter sends the pre-filled optimized prompt
    assert repl.exit() == 0
    assert [e["prompt"] for e in _logged()] == ["write a haiku about rain", chosen]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_ctrl_c_stops_generation_keeps_partial_text_and_goes_on(start: Start) -> None:
    repl = start()
    repl.run("/max 4")
    repl.run("warm up")  # the first turn hashes the model file for the run log: keep that out of the Ctrl-C
    repl.run("/max 300")
    for setting in ("/seed 2", "/temp 3", "/top_k 0", "/top_p 1"):  # near-uniform tokens: no early end of text
        repl.run(setting)
    repl.send("write a very long story about a dragon and a knight\r")
    repl.expect("│ *[^\\s│\x1b]")  # the first generated text is on screen
    repl.child.sendintr()
    stopped = repl.wait_prompt()
    assert "interrupted" in stopped and "kept what was produced" in stopped
    repl.run("/max 4")
    repl.run("/temp default")
    after = repl.run("hello there")
    assert "╭─ optimized ─" in after and "interrupted" not in after
    repl.child.sendintr()  # at an empty prompt: a hint, not an exit
    assert "to leave, press Ctrl-D or type /exit" in repl.wait_prompt()
    pasted = " ".join(["The report lists rainfall and river levels by region."] * 100)  # 3 micro-batches of tokens
    repl.send(f"\x1b[200~{pasted}\x1b[201~\r")
    repl.expect("╭─ optimized ─")  # its prompt is being evaluated
    time.sleep(0.2)
    repl.child.sendintr()
    assert "interrupted" in repl.wait_prompt()
    assert repl.exit() == 0
    _, cut, full, long = _logged()
    assert cut["interrupted"] and 0 < cut["timings"]["generated_tokens"] < 300
    assert cut["output"] and cut["output"].split()[0] in stopped  # the partial text stays on screen
    assert not full["interrupted"] and full["prompt"] == "hello there"
    assert long["interrupted"] and long["timings"]["generated_tokens"] == 0  # stopped within its prompt


def test_lines_typed_during_a_rewrite_wait_as_separate_inputs(start: Start) -> None:
    repl = start()
    repl.run("/max 4")
    repl.run("warm up")  # the first turn hashes the model file for the run log
    repl.run("/max 120")
    for setting in ("/seed 2", "/temp 3", "/top_k 0", "/top_p 1"):  # near-uniform tokens: no early end of text
        repl.run(setting)
    repl.send("write a very long story about a dragon and a knight\r")
    repl.expect("│ *[^\\s│\x1b]")  # the rewrite is streaming
    repl.send("/mode aggressive\r/max 3\rtell me a joke\r")  # typed ahead, as a user does while waiting
    for _ in range(4):  # the story's turn, then each typed line on its own
        shown = repl.wait_prompt()
    assert "error" not in repl.transcript and "aggressive> " in repl.transcript
    *_, story, joke = _logged()
    assert story["prompt"].startswith("write a very long story") and story["mode"] == "stable"
    assert joke["prompt"] == "tell me a joke" and joke["mode"] == "aggressive", shown


def test_a_command_is_one_line_and_bye_or_quit_leave(start: Start) -> None:
    repl = start()
    repl.send("/mode aggressive\x1b\rtell me a joke\r")  # Esc+Enter: a newline inside the input
    assert "error: a /command is one line" in repl.wait_prompt()
    assert _logged() == []  # nothing was optimized, and the mode did not change:
    assert "stable> " in repl.run("/params")
    assert _exit_with(repl, "/bye") == 0
    assert _exit_with(start(), "/quit") == 0


def test_multiline_blocks_newline_keys_and_paste_are_one_prompt(start: Start) -> None:
    repl = start()
    repl.run("/max 2")
    repl.send('"""first line\r')  # Enter inside an open """ block adds a line
    repl.run('second line"""')
    repl.send("alpha\x1b\r")  # Esc+Enter
    repl.run("beta")
    repl.send("gamma\n")  # Ctrl-J
    repl.run("delta")
    repl.run("\x1b[200~pasted one\npasted two\x1b[201~")  # bracketed paste
    repl.run('"""/usr/lib holds what?"""')  # a block is a prompt even when it starts with a slash
    assert repl.exit() == 0
    assert [e["prompt"] for e in _logged()] == [
        "first line\nsecond line", "alpha\nbeta", "gamma\ndelta", "pasted one\npasted two", "/usr/lib holds what?"]


def test_history_survives_a_restart_and_ctrl_r_searches_it(start: Start, bpo_home: Path) -> None:
    repl = start("--no-log")
    repl.run("/seed 4242")
    repl.run("/temp 0.3")
    assert repl.exit() == 0
    assert "/seed 4242" in (bpo_home / "repl_history").read_text()

    repl = start("--no-log")
    repl.send("\x1b[A")  # Up: the last line of the previous session
    assert re.search(r"temperature +0\.3 +set", repl.run(""))
    repl.send("\x124242")  # Ctrl-R, then the text to find
    repl.send("\r")  # accept the match into the line
    assert re.search(r"seed +4242 +set", repl.run(""))
    assert _exit_with(repl, "/exit") == 0
    assert not (bpo_home / "logs.db").exists()


def test_compare_answers_original_and_optimized_side_by_side(start: Start, smollm2_gguf: Path,
                                                             tmp_path: Path) -> None:
    repl = start("--target", str(smollm2_gguf))
    assert "nothing optimized yet" in repl.run("/compare")
    repl.run("/seed 3")
    repl.run("/max 5")
    repl.run("what is the capital of France")
    shown = repl.run("/compare")
    assert f"answers of {smollm2_gguf.name}" in shown
    assert re.search(r"original prompt +┃ +optimized prompt", shown)
    repl.run(f"/save {tmp_path / 'compare.jsonl'}")
    comparison = json.loads((tmp_path / "compare.jsonl").read_text())["comparison"]
    assert comparison["target"] == smollm2_gguf.name
    assert comparison["original_answer"] and comparison["original_answer"] in shown
    assert comparison["optimized_answer"].split("\n")[0] in shown
    repl.run(f"/save {tmp_path / 'compare.md'}")
    assert f"### Answer of {smollm2_gguf.name} to the optimized prompt" in (tmp_path / "compare.md").read_text()
    assert repl.exit() == 0


def test_edit_copy_retry_and_history(start: Start, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"fake-editor": "sed -i 's/bread/cake/' \"$1\"", "xclip": "cat > \"$CLIP_OUT\""}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    clip = tmp_path / "clipboard.txt"
    repl = start(env={"VISUAL": "", "EDITOR": str(bin_dir / "fake-editor"), "CLIP_OUT": str(clip),
                      "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    repl.run("/max 4")
    repl.run("how do I bake bread")
    assert "press Enter to optimize it" in repl.run("/edit")
    repl.run("")
    assert "copied with xclip" in repl.run("/copy")
    assert "╭─ optimized ─" in repl.run("/retry")
    listed = repl.run("/history")
    assert [line.split("│")[3].strip() for line in listed.splitlines() if re.match(r"│ [123] ", line)] == [
        "how do I bake bread", "how do I bake cake", "how do I bake cake"]
    assert repl.exit() == 0
    entries = _logged()
    assert [e["prompt"] for e in entries] == ["how do I bake bread", "how do I bake cake", "how do I bake cake"]
    assert clip.read_text() == entries[1]["output"]


def test_help_lists_every_command_and_mistakes_are_one_line(start: Start, smollm2_gguf: Path) -> None:
    repl = start()
    shown = repl.run("/help")
    assert all(f"/{name}" in shown for name in COMMANDS)
    assert "error: unknown command /frobnicate; /help lists the commands" in repl.run("/frobnicate")
    assert "error: nothing optimized yet" in repl.run("/diff")
    assert "n must be a whole number >= 1, got 0" in repl.run("/n 0")
    assert "top_p must be a number in (0, 1], got 0.0" in repl.run("/top_p 0")  # the preset's range, not another
    assert "unknown preset 'wild'" in repl.run("/mode wild")
    assert "name it .md or .jsonl" in repl.run("/save notes.txt")
    assert "model file not found" in repl.run("/model /nowhere/missing.gguf")
    switched = repl.run(f"/model {smollm2_gguf}")
    assert "bpo-local repl" in switched and "Q4_1" in switched
    assert "Traceback" not in repl.transcript
    assert _exit_with(repl, "/exit") == 0


def test_a_missing_target_fails_at_start(smollm2_gguf: Path) -> None:
    repl = ReplProcess("--model", str(smollm2_gguf), "--target", "/nowhere/chat.gguf")
    assert repl.wait_exit() == 2  # a path the user can fix
    assert "error: model file not found: /nowhere/chat.gguf" in repl.transcript


def test_repl_refuses_a_pipe(run_cli, smollm2_gguf: Path) -> None:
    proc = run_cli("repl", "--model", str(smollm2_gguf), input="hello\n")
    assert proc.returncode == 2
    assert proc.stderr == "error: repl needs a terminal; use `bpo-local optimize` for pipes\n"
