"""REPL building blocks without a terminal: input blocks, diff, session export,
editor and clipboard (real subprocesses), the command table."""

from __future__ import annotations

import base64
import io
import json
import stat
from pathlib import Path

import pytest
from _repl_helpers import make_result

from bpo_local.errors import UsageError
from bpo_local.repl import view
from bpo_local.repl.commands import COMMANDS
from bpo_local.repl.external import copy_to_clipboard, edit_text
from bpo_local.repl.input import block_open, unwrap
from bpo_local.repl.session import Comparison, Session, Turn


@pytest.mark.parametrize(("text", "is_open", "prompt"), [
    ('"""', True, None),
    ('"""first\nsecond', True, None),
    ('"""first\nsecond"""', False, "first\nsecond"),
    ('"""\nbody\n"""', False, "body"),
    ("plain prompt", False, "plain prompt"),
    ('say """ here', False, 'say """ here'),
])
def test_triple_quote_blocks(text: str, is_open: bool, prompt: str | None) -> None:
    assert block_open(text) is is_open
    if prompt is not None:
        assert unwrap(text) == prompt


def test_word_diff_marks_removed_and_added_words() -> None:
    diff = view.word_diff("how do I bake bread", "Explain how to bake sourdough bread", markers=True)
    assert diff.plain == "{+Explain +}how [-do I-]{+to+} bake {+sourdough +}bread"
    coloured = view.word_diff("a b", "a c", markers=False)
    assert coloured.plain == "a bc"
    assert {str(span.style) for span in coloured.spans} == {"red strike", "green"}


def _session() -> Session:
    session = Session()
    session.turns.append(Turn(make_result("bake bread", "Give a sourdough recipe.")))
    turn = Turn(make_result("a joke", "Tell a pun", "Tell a limerick", mode="aggressive", cancelled=True), picked=1)
    turn.comparison = Comparison("chat.gguf", "Why did...", "There once was...")
    session.turns.append(turn)
    return session


def test_save_markdown_and_jsonl(tmp_path: Path) -> None:
    session = _session()
    session.save(tmp_path / "out" / "s.md")
    md = (tmp_path / "out" / "s.md").read_text()
    assert "## Turn 1: stable, bpo-q4_k_m.gguf, seed 7\n" in md and "### Optimized\n\nGive a sourdough recipe.\n" in md
    assert "## Turn 2: aggressive, bpo-q4_k_m.gguf, seed 7, interrupted" in md
    assert "### Candidate 2 (picked)\n\nTell a limerick\n" in md and "### Candidate 1\n\nTell a pun\n" in md
    assert "### Answer of chat.gguf to the optimized prompt\n\nThere once was...\n" in md
    session.save(tmp_path / "s.jsonl")
    first, second = (json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines())
    assert first["optimized_prompt"] == "Give a sourdough recipe." and first["picked"] == 1
    assert second["picked"] == 2 and second["finish_reasons"][0] == "cancelled"
    assert second["comparison"]["original_answer"] == "Why did..."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.jsonl"]


def test_save_refuses_unknown_formats_empty_sessions_and_unwritable_places(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="name it .md or .jsonl"):
        _session().save(tmp_path / "s.txt")
    with pytest.raises(UsageError, match="nothing to save yet"):
        Session().save(tmp_path / "s.md")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot write .*choose another place"):
        _session().save(tmp_path / "file" / "s.md")


def test_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "s.jsonl"
    target.write_text("old content that is much longer than the new one " * 100)
    _session().save(target)
    assert len(target.read_text().splitlines()) == 2


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(stat.S_IRWXU)
    return path


def test_edit_text_runs_the_editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(_script(tmp_path / "ed", "printf 'new text\\n' > \"$1\"")))
    assert edit_text("old text") == "new text"
    monkeypatch.setenv("VISUAL", str(_script(tmp_path / "bad", "exit 3")))
    with pytest.raises(UsageError, match="exited with status 3; prompt left unchanged"):
        edit_text("old text")
    monkeypatch.setenv("VISUAL", str(tmp_path / "missing-editor"))
    with pytest.raises(UsageError, match="cannot start editor"):
        edit_text("old text")


def test_copy_uses_a_tool_or_falls_back_to_osc52(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    terminal = io.StringIO()
    message = copy_to_clipboard("héllo", terminal)
    assert message.startswith("no clipboard tool worked") and "OSC 52" in message
    assert terminal.getvalue() == f"\x1b]52;c;{base64.b64encode('héllo'.encode()).decode()}\a"
    _script(bin_dir / "wl-copy", "exit 1")  # present but failing (no Wayland): the next tool is tried
    _script(bin_dir / "xsel", f"/bin/cat > {tmp_path / 'clip'}")  # PATH holds only bin_dir
    assert copy_to_clipboard("héllo", io.StringIO()) == "copied with xsel"
    assert (tmp_path / "clip").read_text() == "héllo"


def test_every_command_has_usage_help_and_appears_in_help() -> None:
    assert {"help", "mode", "n", "temp", "top_p", "seed", "max", "params", "retry", "pick", "diff", "use", "edit",
            "copy", "save", "history", "model", "stats", "compare", "exit"} <= set(COMMANDS)
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(view.help_table(COMMANDS.values()))
    text = console.export_text()
    for cmd in COMMANDS.values():
        assert cmd.help and f"/{cmd.name}" in text


def _render(renderable: object) -> str:
    from rich.console import Console

    console = Console(width=60, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_candidates_mark_only_the_cut_ones_and_the_pick() -> None:
    shown = _render(view.candidates(["first", "", "third"], picked=2, cancelled=[False, True, False]))
    assert "╭─ 1 ─" in shown and "╭─ 2 interrupted ─" in shown and "╭─ 3 (picked) ─" in shown
    assert "(empty)" in shown
    assert "╭─ optimized interrupted ─" in _render(view.candidates(["partial"], cancelled=[True]))
