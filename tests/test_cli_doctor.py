"""`bpo-local doctor` on the real SmolLM2 GGUF, without a model, and with a broken one."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from _cli_helpers import FAST, with_chat_template

import bpo_local
from bpo_local.presets import CHAT_TEMPLATE_JINJA


def test_doctor_reports_versions_llama_cpp_paths_and_the_model(run_cli, smollm2_gguf: Path, bpo_home: Path) -> None:
    proc = run_cli("doctor", "--json", "--model", str(smollm2_gguf), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    versions = report["versions"]
    assert versions["bpo-local"] == bpo_local.__version__
    assert versions["llama-cpp-python"] == metadata.version("llama-cpp-python")
    assert versions["gguf"] == metadata.version("gguf") and versions["python"] == platform.python_version()
    llama = report["llama.cpp"]
    assert any(d["kind"] == "CPU" for d in llama["devices"]) and "CPU" in llama["features"]
    assert isinstance(llama["gpu_offload"], bool) and llama["physical_cores"] >= 1
    assert report["paths"]["models"] == str(bpo_home / "models")
    assert report["paths"]["rewrite_store"] == str(bpo_home / "rewrites.db")
    assert report["paths"]["run_log"] == str(bpo_home / "logs.db")
    model = report["model"]
    assert model["path"] == str(smollm2_gguf) and model["size_bytes"] == smollm2_gguf.stat().st_size
    assert model["architecture"] == "llama" and model["quant"] == "Q4_1"
    assert 100e6 < model["parameters"] < 200e6 and model["context"] == 512 and model["context_train"] >= 2048
    assert model["chat_template"] == "another" and model["bpo_chat_template"] is False  # SmolLM2's own template
    decode = model["threads"]["decode"]  # measured on a short rewrite
    assert 1 <= decode["threads"] <= llama["physical_cores"] and decode["why"]

    text = run_cli("doctor", "--model", str(smollm2_gguf), *FAST)
    assert text.returncode == 0 and text.stderr == ""
    for expected in ("versions", "llama-cpp-python", "GPU offload", "paths", "rewrites.db", "Q4_1", "135 M", "not BPO's",
                     "decode threads"):
        assert expected in text.stdout, expected


def test_doctor_recognises_the_bpo_chat_template(run_cli, smollm2_gguf: Path, tmp_path: Path) -> None:
    target = with_chat_template(smollm2_gguf, tmp_path / "bpo-templated.gguf", CHAT_TEMPLATE_JINJA)
    report = json.loads(run_cli("doctor", "--json", "--model", str(target), *FAST).stdout)
    assert report["model"]["bpo_chat_template"] is True and report["model"]["chat_template"] == "BPO's"


def test_doctor_without_a_model_says_so_and_succeeds(run_cli) -> None:
    proc = run_cli("doctor")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "no model: pass --model" in proc.stdout
    assert "no model" in json.loads(run_cli("doctor", "--json").stdout)["model"]["none"]


def test_doctor_with_a_broken_model_reports_it_and_fails(run_cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    proc = run_cli("doctor", "--json", "--model", str(broken))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "broken.gguf" in json.loads(proc.stdout)["model"]["error"]
