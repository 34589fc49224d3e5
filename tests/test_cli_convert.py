"""`bpo-local convert / models / verify` as a user runs them: real checkpoints, real subprocesses."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from _checkpoints import build_llama2_pad_safetensors
from _convert_helpers import FakeHub, mounted_tmpfs
from _store_helpers import kill, start_cli, store_files, wait_for

from bpo_local.gguf_header import read_header
from bpo_local.models.store import ModelStore
from bpo_local.presets import CHAT_TEMPLATE_JINJA, STABLE


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> Path:
    """A tiny random Llama-2 checkpoint (bf16 safetensors, Llama-2 tokenizer) in a folder named BPO."""
    return build_llama2_pad_safetensors(tmp_path_factory.mktemp("ckpt") / "BPO", llama2_tokenizer).path


@pytest.fixture
def models(bpo_home: Path) -> Path:
    return bpo_home / "models"


def one_line_error(proc, code: int = 1) -> str:  # noqa: ANN001
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
    return proc.stderr


def test_convert_a_folder_then_list_locate_use_verify_and_remove(run_cli, checkpoint, eval_pairs, models) -> None:
    done = run_cli("convert", str(checkpoint), "--quant", "Q8_0,q4_0", "--data", str(eval_pairs), "--threads", "2")
    assert done.returncode == 0, done.stderr
    assert "bpo:q8_0" in done.stdout and "bpo:q4_0" in done.stdout and "KL" in done.stdout
    assert store_files(models) == ["bpo/bpo-q4_0.gguf", "bpo/bpo-q4_0.json", "bpo/bpo-q8_0.gguf", "bpo/bpo-q8_0.json"]

    q8, q4 = (json.loads((models / "bpo" / f"bpo-{q}.json").read_text()) for q in ("q8_0", "q4_0"))
    assert q8["source"] == {"repo": str(checkpoint), "revision": None}
    assert 0 < q8["verification"]["kl_mean"] < q4["verification"]["kl_mean"]
    assert q8["verification"]["reference"] == "bpo:f16" and q8["tool"]["bpo_local"]
    meta = read_header(models / "bpo" / "bpo-q8_0.gguf").metadata
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE_JINJA
    assert meta["bpo.stable.temperature"] == pytest.approx(STABLE.temperature)
    assert meta["bpo.aggressive.n"] == 5

    listed = run_cli("models")
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == ["build", "quant", "size", "source", "KL", "path"]  # as `llm models` heads it
    assert [line.split("\t")[0] for line in lines] == ["bpo:q8_0", "bpo:q4_0"]  # q8_0 ranks before q4_0
    assert lines[0].split("\t")[4] == f"{q8['verification']['kl_mean']:.4f}"
    as_json = json.loads(run_cli("models", "--json").stdout)
    assert [b["name"] for b in as_json] == ["bpo:q8_0", "bpo:q4_0"] and as_json[0]["default"]

    path = run_cli("models", "path", "bpo:q4_0")
    assert path.stdout == f"{models / 'bpo' / 'bpo-q4_0.gguf'}\n" and path.stderr == ""

    answer = run_cli("optimize", "--model", "bpo:q8_0", "--max-tokens", "4", "--seed", "1", "--threads", "2",
                     "--no-log", "hello")
    assert answer.returncode == 0, answer.stderr

    itself = run_cli("verify", "bpo:q4_0", "--reference", "bpo:q4_0", "--data", str(eval_pairs),
                     "--threads", "2", "--json")
    assert itself.returncode == 0, itself.stderr
    result = json.loads(itself.stdout)
    assert result["kl_mean"] == 0 and result["same_top"] == 1 and result["ppl_ratio"] == 1
    assert json.loads((models / "bpo" / "bpo-q4_0.json").read_text())["verification"]["kl_mean"] == 0

    removed = run_cli("models", "rm", "bpo:q4_0")
    assert removed.returncode == 0 and store_files(models) == ["bpo/bpo-q8_0.gguf", "bpo/bpo-q8_0.json"]


def test_convert_the_default_source_from_the_hub_keeping_f16(run_cli, checkpoint, models, tmp_path) -> None:
    with FakeHub({"zai-org/BPO": checkpoint}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        done = run_cli("convert", "--quant", "q4_0", "--keep-f16", "--no-verify", env=env)
    assert done.returncode == 0, done.stderr
    builds = {b.name: b for b in ModelStore(models).builds()}
    assert sorted(builds) == ["bpo:f16", "bpo:q4_0"]
    assert builds["bpo:q4_0"].source_repo == "zai-org/BPO" and len(builds["bpo:q4_0"].source_revision) == 40
    assert builds["bpo:q4_0"].verification is None
    meta = read_header(builds["bpo:f16"].path).metadata
    assert meta["general.source.repository"] == "zai-org/BPO"
    assert meta["general.source.revision"] == builds["bpo:f16"].source_revision
    default = run_cli("verify", "bpo:q4_0", "--data", str(Path(__file__).parent / "nope.jsonl"))
    assert "cannot read eval data" in one_line_error(default, code=2)


def test_the_old_hub_name_is_the_same_model_and_offline_says_what_to_do(run_cli, checkpoint, models,
                                                                         tmp_path) -> None:
    hf_home = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub({"THUDM/BPO": checkpoint}) as hub:
        done = run_cli("convert", "THUDM/BPO", "--quant", "q4_0", "--no-verify",
                       env={"HF_ENDPOINT": hub.url, **hf_home})
    assert done.returncode == 0, done.stderr
    assert {b.source_repo for b in ModelStore(models).builds()} == {"THUDM/BPO"}
    assert read_header(ModelStore(models).builds()[0].path).metadata["bpo.preset.default"] == "stable"

    offline = run_cli("convert", "--quant", "q8_0", "--no-verify", env={"HF_HUB_OFFLINE": "1", **hf_home})
    assert offline.returncode == 0, offline.stderr  # zai-org/BPO from THUDM/BPO's cache
    assert {b.name: b.source_repo for b in ModelStore(models).builds()}["bpo:q8_0"] == "zai-org/BPO"

    unreachable = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "empty-hf")}
    line = one_line_error(run_cli("convert", "--no-verify", env=unreachable))
    assert "cannot reach the Hub" in line and "zai-org/BPO is not in the Hugging Face cache" in line
    assert "huggingface-cli download zai-org/BPO --local-dir BPO" in line and "bpo-local convert ./BPO" in line


def test_bad_inputs_are_one_line_errors_and_leave_the_store_untouched(run_cli, smollm2_gguf, tmp_path,
                                                                    models) -> None:
    assert "unknown quant 'q3'; choose from: f32, f16" in one_line_error(
        run_cli("convert", str(tmp_path), "--quant", "q8_0,q3"), code=2)
    assert "already quantized" in one_line_error(run_cli("convert", str(smollm2_gguf), "--no-verify"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in one_line_error(run_cli("convert", str(empty), "--no-verify"))
    assert "no build named 'bpo:q4_k_m'" in one_line_error(run_cli("models", "path", "bpo:q4_k_m"), code=2)
    assert "no build named" in one_line_error(run_cli("models", "rm", "bpo:q4_k_m"), code=2)
    assert "no build named" in one_line_error(run_cli("verify", "bpo:q4_k_m"), code=2)
    assert store_files(models) == []
    listed = run_cli("models")
    assert listed.returncode == 0 and listed.stdout == "" and "bpo-local convert" in listed.stderr


def test_verify_without_a_reference_names_the_fix(run_cli, checkpoint, models) -> None:
    assert run_cli("convert", str(checkpoint), "--quant", "q8_0", "--no-verify").returncode == 0
    fix = f"bpo-local convert {checkpoint.resolve()} --quant f16"
    assert fix in one_line_error(run_cli("verify", "bpo:q8_0"), code=2)
    assert run_cli(*fix.split()[1:]).returncode == 0  # the command the message names, as given
    verified = run_cli("verify", "bpo:q8_0", "--threads", "2", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["reference"] == "bpo:f16"


def _processes_using(folder: Path) -> list[int]:
    """Processes whose command line names a path under ``folder``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _quantizing(models: Path) -> bool:
    return any(p.suffix == ".gguf" for p in (models / ".tmp").glob("*/*"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_convert_leaves_no_build_and_a_rerun_succeeds(sig, smollm2_f16, models) -> None:
    args = ("convert", str(smollm2_f16), "--name", "smol", "--quant", "q8_0,q4_0", "--no-verify", "--threads", "1")
    proc = start_cli(*args)
    wait_for(lambda: _quantizing(models))
    stderr = kill(proc, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and stderr == "interrupted\n"
    wait_for(lambda: not _processes_using(models), timeout=10)  # nothing left writing into the store
    assert ModelStore(models).builds() == []
    assert not any(p.suffix == ".json" for p in models.rglob("*"))
    rerun = start_cli(*args)
    assert rerun.wait(300) == 0, rerun.stderr.read()
    assert store_files(models) == ["smol/smol-q4_0.gguf", "smol/smol-q4_0.json",
                                   "smol/smol-q8_0.gguf", "smol/smol-q8_0.json"]
    assert all(b.intact for b in ModelStore(models).builds())


def test_two_converts_into_one_store_at_once(smollm2_f16, models) -> None:
    procs = [start_cli("convert", str(smollm2_f16), "--name", "smol", "--quant", quants, "--no-verify",
                       "--threads", "1") for quants in ("q4_0,q8_0", "q4_0")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    import hashlib

    builds = ModelStore(models).builds()
    assert [b.name for b in builds] == ["smol:q8_0", "smol:q4_0"]
    for build in builds:
        assert hashlib.sha256(build.path.read_bytes()).hexdigest() == build.sha256
    assert store_files(models) == ["smol/smol-q4_0.gguf", "smol/smol-q4_0.json",
                                   "smol/smol-q8_0.gguf", "smol/smol-q8_0.json"]


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    """An 85 MiB file system (tmpfs), where SmolLM2 fits as Q4_0 on paper but not in fact, and Q8_0 not at all."""
    yield from mounted_tmpfs(tmp_path / "disk", "85m")


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])  # refused up front; runs out of space while writing
def test_a_full_disk_is_one_line_and_leaves_no_partial_build(run_cli, smollm2_f16, small_disk, quant) -> None:
    failed = run_cli("convert", str(smollm2_f16), "--name", "smol", "--quant", quant, "--no-verify",
                     "--threads", "2", env={"BPO_LOCAL_HOME": str(small_disk)})
    assert "not enough disk space" in one_line_error(failed) and "BPO_LOCAL_HOME" in failed.stderr
    assert store_files(small_disk / "models") == []
