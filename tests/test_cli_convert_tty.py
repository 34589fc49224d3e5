"""On a real terminal: the first-run offer to build the default model, and Ctrl-C during a convert."""

from __future__ import annotations

from pathlib import Path

import pexpect
import pytest
from _checkpoints import build_llama2_pad_safetensors
from _cli_helpers import spawn_cli
from _convert_helpers import FakeHub
from _store_helpers import store_files, wait_for

from bpo_local.models.store import ModelStore


@pytest.fixture(scope="module")
def hub_checkpoint(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> Path:
    return build_llama2_pad_safetensors(tmp_path_factory.mktemp("hub") / "BPO", llama2_tokenizer).path


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    args = args or ("optimize", "--max-tokens", "3", "--threads", "2", "--no-log", "hello")
    return spawn_cli(*args, env=env, timeout=120, dimensions=(40, 200))


def test_declining_the_offer_ends_with_the_command_to_run(bpo_home: Path) -> None:
    child = spawn({})
    child.expect(r"~13\.5 GB")
    child.expect(r"Build it now\?")
    child.sendline("")  # the default is no
    child.expect("bpo-local convert zai-org/BPO")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2 and "no model" in child.before
    assert ModelStore(bpo_home / "models").builds() == []


def test_accepting_builds_the_default_and_goes_on(bpo_home: Path, hub_checkpoint: Path, tmp_path: Path) -> None:
    with FakeHub({"zai-org/BPO": hub_checkpoint}) as hub:
        child = spawn({"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"})
        child.expect(r"Build it now\?")
        child.sendline("y")
        child.expect("built bpo:q4_k_m")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0, child.before
    store = ModelStore(bpo_home / "models")
    assert [b.name for b in store.builds()] == ["bpo:q4_k_m", "bpo:q8_0"]
    assert all(b.verification and b.verification["sequences"] == 32 for b in store.builds())
    assert store.best() == store.path_for("bpo", "q4_k_m")


def test_without_a_terminal_there_is_no_question(run_cli) -> None:  # noqa: ANN001
    done = run_cli("optimize", "hello", input="")
    assert done.returncode == 2 and "Build it now" not in done.stderr
    assert done.stderr.startswith("error: no model") and done.stderr.count("\n") == 1


def test_ctrl_c_while_quantizing_stops_at_once_and_leaves_nothing(bpo_home: Path, smollm2_f16: Path) -> None:
    """The terminal sends SIGINT to the whole process group, the quantizer child included."""
    models = bpo_home / "models"
    child = spawn({}, "convert", str(smollm2_f16), "--name", "smol", "--quant", "q8_0", "--no-verify",
                  "--threads", "1")
    wait_for(lambda: any(p.suffix == ".gguf" for p in (models / ".tmp").glob("*/*")))
    child.sendintr()
    child.expect("interrupted")
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 130 and "Traceback" not in child.before
    assert store_files(models) == []
