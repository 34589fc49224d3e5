"""`bpo-local log`: listing, search and export, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from _cli_helpers import spawn_cli
from _repl_helpers import make_result, plain

from bpo_local.runlog import RunLog


def _fill() -> None:
    with RunLog.open() as log:
        log.record(make_result("how do I bake bread", "Give a step-by-step sourdough recipe."), "aa")
        log.record(make_result("tell me a joke", "Tell a clean joke\nabout cats", "Tell a pun", mode="aggressive"), "bb")
        log.record(make_result("summarize this", "Summarize in three bullets", cancelled=True), "cc")


def test_plain_listing_is_one_line_per_entry_newest_first(run_cli) -> None:
    _fill()
    proc = run_cli("log")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    fields = lines[1].split("\t")
    assert fields[0] == "2" and fields[2] == "aggressive" and fields[3] == "bpo-q4_k_m.gguf"
    assert fields[4] == "tell me a joke" and fields[5] == "Tell a clean joke\\nabout cats  (+1 more)"
    assert lines[0].endswith("Summarize in three bullets  [interrupted]")


def test_plain_listing_keeps_carriage_returns_and_tabs_inside_their_field(run_cli) -> None:
    with RunLog.open() as log:
        log.record(make_result("a\r\nwindows\tprompt", "back\\slash"), "dd")
    (line,) = run_cli("log").stdout.splitlines()
    assert line.split("\t")[4:] == ["a\\r\\nwindows\\tprompt", "back\\\\slash"]


def test_limit_and_search(run_cli) -> None:
    _fill()
    assert [line.split("\t")[4] for line in run_cli("log", "-n", "1").stdout.splitlines()] == ["summarize this"]
    found = run_cli("log", "-q", "sourdough").stdout.splitlines()
    assert [line.split("\t")[4] for line in found] == ["how do I bake bread"]
    assert run_cli("log", "-q", "nothing-like-this").stdout == ""
    bad = run_cli("log", "-n", "-3")
    assert bad.returncode == 2 and bad.stderr == "error: -n must be 0 (all) or more, got -3\n"


def test_json_and_jsonl_export(run_cli) -> None:
    _fill()
    entries = json.loads(run_cli("log", "--json").stdout)
    assert [e["id"] for e in entries] == [3, 2, 1]
    assert entries[1]["candidates"] == ["Tell a clean joke\nabout cats", "Tell a pun"]
    assert entries[0]["interrupted"] is True and entries[2]["model_sha256"] == "aa"
    exported = [json.loads(line) for line in run_cli("log", "--jsonl").stdout.splitlines()]
    assert [e["prompt"] for e in exported] == ["how do I bake bread", "tell me a joke", "summarize this"]
    assert exported == list(reversed(entries))


def test_jsonl_exports_everything_by_default(run_cli) -> None:
    with RunLog.open() as log:
        for i in range(25):
            log.record(make_result(f"p{i}", f"o{i}"), "0")
    assert len(run_cli("log").stdout.splitlines()) == 20
    assert len(run_cli("log", "--jsonl").stdout.splitlines()) == 25
    assert len(run_cli("log", "-n", "0").stdout.splitlines()) == 25


def test_path_and_broken_log(run_cli, bpo_home: Path) -> None:
    assert run_cli("log", "--path").stdout.strip() == str(bpo_home / "logs.db")
    (bpo_home / "logs.db").write_bytes(b"garbage" * 500)
    proc = run_cli("log")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: run log ") and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_table_on_a_terminal() -> None:
    import pexpect

    _fill()
    child = spawn_cli("log", dimensions=(40, 160), timeout=30)
    child.expect(pexpect.EOF)
    screen = plain(child.before)
    assert "┃ #" in screen and "optimized" in screen
    assert "Give a step-by-step sourdough recipe." in screen and "[interrupted]" in screen
