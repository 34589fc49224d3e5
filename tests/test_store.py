"""The model store: builds with manifests, default choice, locks, atomic writes, stale cleanup."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _store_helpers import store_files

from bpo_local.errors import ModelNotFound, StoreError
from bpo_local.models.store import ModelStore, model_name

TOOL = {"bpo_local": "test"}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def add(store: ModelStore, gguf: Path, model: str, quant: str) -> None:
    """Add a copy of ``gguf`` as ``model:quant``, the way a convert run does (scratch file, lock)."""
    with store.workspace() as work, store.lock(model, quant):
        copy = work / "x.gguf"
        shutil.copyfile(gguf, copy)
        store.add(copy, model=model, quant=quant, source_repo="THUDM/BPO", source_revision="abc123", tool=TOOL)


def test_model_name_is_the_last_part_lowercased() -> None:
    assert model_name("THUDM/BPO") == "bpo"
    assert model_name("/data/ckpt/My Model/") == "my-model"


def test_an_empty_store_has_no_default_and_names_the_fix(store: ModelStore) -> None:
    assert store.builds() == [] and store.best() is None
    with pytest.raises(ModelNotFound, match=r"no build named 'bpo:q4_k_m'; `bpo-local models` lists them"):
        store.resolve("bpo:q4_k_m")


def test_a_build_has_a_manifest_and_resolves_by_name(store: ModelStore, tiny_gguf: Path) -> None:
    add(store, tiny_gguf, "bpo", "q8_0")
    (build,) = store.builds()
    assert build.name == "bpo:q8_0" and build.path == store.root / "bpo" / "bpo-q8_0.gguf"
    manifest = json.loads(build.manifest_path.read_text())
    assert manifest["source"] == {"repo": "THUDM/BPO", "revision": "abc123"}
    assert manifest["size_bytes"] == tiny_gguf.stat().st_size
    import hashlib
    assert manifest["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert manifest["n_params"] == 3 * 8 + 8
    assert store.resolve("BPO:Q8_0") == build.path == store.resolve("bpo")
    assert store_files(store.root) == ["bpo/bpo-q8_0.gguf", "bpo/bpo-q8_0.json"]


def test_best_prefers_q4_k_m_then_larger_quants_and_the_bpo_model(store: ModelStore, tiny_gguf: Path) -> None:
    for model, quant in [("other", "q4_k_m"), ("bpo", "f16"), ("bpo", "q8_0"), ("bpo", "q6_k")]:
        add(store, tiny_gguf, model, quant)
    assert store.best() == store.path_for("bpo", "q6_k")
    add(store, tiny_gguf, "bpo", "q4_k_m")
    assert store.best() == store.path_for("bpo", "q4_k_m")
    assert [b.name for b in store.builds()] == ["bpo:q4_k_m", "bpo:q6_k", "bpo:q8_0", "bpo:f16", "other:q4_k_m"]


def test_a_damaged_build_is_refused_with_the_fix(store: ModelStore, tiny_gguf: Path) -> None:
    add(store, tiny_gguf, "bpo", "q8_0")
    path = store.path_for("bpo", "q8_0")
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(StoreError, match=r"build bpo:q8_0 is damaged .*`bpo-local models rm bpo:q8_0`"):
        store.resolve("bpo:q8_0")
    assert store.best() is None


def test_remove_deletes_manifest_and_file(store: ModelStore, tiny_gguf: Path) -> None:
    add(store, tiny_gguf, "bpo", "q8_0")
    store.remove("bpo:q8_0")
    assert store_files(store.root) == [] and store.builds() == []
    with pytest.raises(ModelNotFound):
        store.remove("bpo:q8_0")


def test_a_gguf_without_manifest_is_no_build_and_is_cleaned(store: ModelStore, tiny_gguf: Path) -> None:
    orphan, users = store.path_for("bpo", "q4_0"), store.root / "bpo" / "my-own.gguf"
    orphan.parent.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, orphan)
    shutil.copyfile(tiny_gguf, users)
    assert store.builds() == []
    assert store.clean_stale() == [orphan] and not orphan.exists()
    assert users.exists()  # not named like a build: never deleted


def _hold_workspace(root: Path, ready, done) -> None:  # noqa: ANN001 - multiprocessing events
    with ModelStore(root).workspace() as work:
        (work / "partial.gguf").write_bytes(b"x" * 1000)
        ready.set()
        done.wait(30)


def test_scratch_of_a_live_run_survives_cleanup_and_a_killed_runs_does_not(store: ModelStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    live = ctx.Process(target=_hold_workspace, args=(store.root, ready, done))
    live.start()
    assert ready.wait(60)
    assert store.clean_stale() == []  # locked: another run is using it
    assert len(store_files(store.root)) == 1
    os.kill(live.pid, signal.SIGKILL)  # like kill -9 on a convert
    live.join()
    assert len(store.clean_stale()) == 1
    assert store_files(store.root) == []


def test_writes_that_fail_are_one_line_store_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file where the store should be")
    with pytest.raises(StoreError, match=r"cannot write to the model store .*; check its permissions"):
        with ModelStore(blocker).workspace():
            pass


def test_a_damaged_manifest_is_skipped_by_listing(store: ModelStore, tiny_gguf: Path) -> None:
    add(store, tiny_gguf, "bpo", "q8_0")
    (store.root / "bpo" / "bpo-q4_0.json").write_text("{not json")
    assert [b.name for b in store.builds()] == ["bpo:q8_0"]


def test_two_processes_adding_the_same_build_leave_one_whole_build(store: ModelStore, tiny_gguf: Path) -> None:
    script = (
        "import shutil, sys\nfrom pathlib import Path\nfrom bpo_local.models.store import ModelStore\n"
        "s = ModelStore(Path(sys.argv[1]))\n"
        "for _ in range(5):\n"
        "    with s.workspace() as w, s.lock('bpo', 'q8_0'):\n"
        "        shutil.copyfile(sys.argv[2], w / 'x.gguf')\n"
        "        s.add(w / 'x.gguf', model='bpo', quant='q8_0', source_repo=None, source_revision=None, tool={})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store.root), str(tiny_gguf)]) for _ in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    (build,) = store.builds()
    assert build.intact and store_files(store.root) == ["bpo/bpo-q8_0.gguf", "bpo/bpo-q8_0.json"]
