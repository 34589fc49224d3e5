"""Files that hold every prompt are created for their user only: the run log and the REPL history, and
the data folder itself, whichever write creates it first."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bpo_local.config import data_dir, models_dir, state_dir
from bpo_local.models.digest import file_sha256
from bpo_local.models.store import ModelStore
from bpo_local.repl.input import prompt_session
from bpo_local.runlog import RunLog


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_run_log_and_its_folder_are_user_only(bpo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPO_LOCAL_HOME", str(bpo_home / "new"))  # a data folder that does not exist yet
    with RunLog.open() as log:
        log.query()
    assert mode(data_dir()) == 0o700
    assert mode(log.path) == 0o600
    assert all(mode(p) == 0o600 for p in log.path.parent.glob("logs.db*")), list(log.path.parent.iterdir())


def test_a_data_folder_the_model_store_creates_is_user_only(bpo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPO_LOCAL_HOME", str(bpo_home / "new" / "home"))  # two folders that do not exist yet
    with ModelStore(models_dir()).workspace():
        pass
    assert mode(data_dir()) == 0o700 and mode(data_dir().parent) == 0o700


def test_a_state_folder_the_digest_cache_creates_is_user_only(bpo_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("BPO_LOCAL_HOME", str(bpo_home / "new"))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    file_sha256(tmp_path / "model.gguf")
    assert mode(state_dir()) == 0o700


def test_an_existing_world_readable_run_log_is_narrowed(bpo_home: Path) -> None:
    with RunLog.open() as log:
        pass
    log.path.chmod(0o644)
    with RunLog.open():
        assert mode(log.path) == 0o600


def test_the_repl_history_is_user_only(bpo_home: Path) -> None:
    history = state_dir() / "sub" / "repl_history"
    prompt_session(history)
    assert mode(history) == 0o600 and mode(history.parent) == 0o700
