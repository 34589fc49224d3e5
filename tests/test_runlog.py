"""The SQLite run log: entries, search, forward migration, durability, clear errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _repl_helpers import make_result

from bpo_local import runlog
from bpo_local.cli.advice import describe
from bpo_local.errors import BpoLocalError
from bpo_local.runlog import MIGRATIONS, RunLog


def test_record_and_query_round_trip(bpo_home: Path) -> None:
    with RunLog.open() as log:
        first = log.record(make_result("write a poem", "Write a rhyming poem about the sea."), "ab" * 32)
        second = log.record(make_result("fix my code", "Explain the bug", "Rewrite it", mode="aggressive"), "cd" * 32)
        entries = log.query()
    assert log.path == bpo_home / "logs.db"
    assert [e["id"] for e in entries] == [second, first]  # newest first
    e = entries[1]
    assert e["prompt"] == "write a poem"
    assert e["output"] == "Write a rhyming poem about the sea."
    assert e["model"] == "bpo-q4_k_m.gguf" and e["model_sha256"] == "ab" * 32
    assert e["params"]["top_k"] == 50 and e["seed"] == 7
    assert e["timings"]["first_token_seconds"] == 0.25 and e["timings"]["prompt_tokens"] == 40
    assert e["interrupted"] is False and e["created"].endswith("+00:00")
    assert entries[0]["candidates"] == ["Explain the bug", "Rewrite it"] and entries[0]["mode"] == "aggressive"


def test_limit_and_interrupted_flag() -> None:
    with RunLog.open() as log:
        for i in range(5):
            log.record(make_result(f"prompt {i}", f"better {i}", cancelled=i == 4), "00")
        entries = log.query(limit=2)
    assert [e["prompt"] for e in entries] == ["prompt 4", "prompt 3"]
    assert entries[0]["interrupted"] is True and entries[1]["interrupted"] is False


def test_search_finds_words_in_any_candidate_and_tolerates_query_syntax() -> None:
    with RunLog.open() as log:
        log.record(make_result("plan a trip", "Plan a week in Kyoto", "Plan a weekend in Osaka", mode="aggressive"), "0")
        log.record(make_result("bake bread", "Give a sourdough recipe"), "0")
        assert [e["prompt"] for e in log.query("osaka")] == ["plan a trip"]
        assert [e["prompt"] for e in log.query("sourdough BAKE")] == ["bake bread"]
        assert log.query("kyoto sourdough") == []
        assert log.query('"unbalanced AND - NEAR( *') == []
        assert len(log.query("  ")) == 2


def test_search_without_fts5_falls_back_to_like(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runlog, "_has_fts5", lambda db: False)
    with RunLog.open() as log:
        log.record(make_result("100% sure_thing", "Be certain"), "0")
        log.record(make_result("other", "100 percent"), "0")
        assert not runlog._table_exists(log._db, "runs_fts")
        assert [e["prompt"] for e in log.query("100%")] == ["100% sure_thing"]
        assert [e["prompt"] for e in log.query("sure_")] == ["100% sure_thing"]
        assert [e["prompt"] for e in log.query("percent")] == ["other"]


def test_old_schema_migrates_forward_and_keeps_entries(bpo_home: Path) -> None:
    path = bpo_home / "logs.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO runs (created, model, model_sha256, mode, prompt, output, candidates, finish_reasons,"
        " params, seed, timings) VALUES ('2026-01-01T00:00:00+00:00', 'm.gguf', '0', 'stable', 'old prompt',"
        " 'old answer', '[\"old answer\"]', '[\"stop\"]', '{}', 1, '{}')"
    )
    db.commit()
    db.close()
    with RunLog.open(path) as log:
        assert [e["prompt"] for e in log.query("answer")] == ["old prompt"]
        log.record(make_result("new prompt", "new answer"), "0")
        assert len(log.query("answer")) == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_run_on_a_server_is_logged_without_a_file_digest(bpo_home: Path) -> None:
    """Schema 2 (NOT NULL digest) migrates to 3; an old entry keeps its id, digest and search entry."""
    path = bpo_home / "logs.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        migration(db)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with RunLog.open(path) as log:
        old = log.record(make_result("local prompt", "local answer"), "ab" * 32)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 2")  # as if written before the upgrade
    db.commit()
    db.close()
    with RunLog.open(path) as log:
        new = log.record(make_result("remote prompt", "remote answer"), None, backend="llama-server http://h:8080")
        entries = {e["id"]: e for e in log.query("answer")}
    assert entries[old]["model_sha256"] == "ab" * 32 and entries[old]["prompt"] == "local prompt"
    assert entries[new]["model_sha256"] is None and entries[new]["backend"] == "llama-server http://h:8080"


def test_newer_schema_is_refused_with_a_fix(bpo_home: Path) -> None:
    path = bpo_home / "logs.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(BpoLocalError, match="newer than this bpo-local knows") as info:
        RunLog.open(path)
    assert describe(info.value).endswith("; upgrade bpo-local or pass --no-log")


def test_a_file_that_is_not_a_database_is_a_one_line_error(bpo_home: Path) -> None:
    path = bpo_home / "logs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BpoLocalError) as info:
        RunLog.open(path)
    assert "is unusable" in str(info.value) and "\n" not in str(info.value)
    assert describe(info.value).endswith("; move it away or pass --no-log")


def test_entry_survives_a_killed_process(bpo_home: Path) -> None:
    """Each record is committed on its own: kill -9 right after recording loses nothing."""
    code = (
        "import os, signal, sys; sys.path.insert(0, 'tests');"
        "from _repl_helpers import make_result; from bpo_local.runlog import RunLog;"
        "log = RunLog.open(); log.record(make_result('kept', 'kept too'), '0');"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    with RunLog.open() as log:
        assert [e["output"] for e in log.query()] == ["kept too"]


def test_two_writers_share_the_log() -> None:
    with RunLog.open() as a, RunLog.open() as b:
        a.record(make_result("from a", "A"), "0")
        b.record(make_result("from b", "B"), "0")
        assert [e["prompt"] for e in a.query()] == ["from b", "from a"]
