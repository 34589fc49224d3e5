"""llama.cpp's extra CPU weight buffers: AMX (which crashes on quantized models) is left out by default,
every other type is kept, and a user can opt back in or out. Each load runs in a subprocess: the buffer
list is process-wide, and a crash must fail the test rather than the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpo_local.models.quantize import quantize

LOAD = """
import json, sys
from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine
with Engine(sys.argv[1], n_ctx=256, n_threads=1, cpu_buffers=sys.argv[2], verbose=True) as engine:
    prompt = tuple(engine.tokenize("The capital of France is", add_bos=True))
    generation = engine.generate(Request(prompt, max_new_tokens=4, sampling=Sampling(temperature=0)))
    result = generation.run()
    print(json.dumps({"offered": engine.buffers.offered, "excluded": engine.buffers.excluded,
                      "tokens": result.completions[0].tokens}))
"""

RAW_LOAD = """
import sys
from bpo_local.backends.llamacpp import buffers
from bpo_local.backends.llamacpp.native import llama, set_verbose
lib = llama()
set_verbose(True)
buffers._extra_types().offer(set(sys.argv[2].split(",")) - {""})
params = lib.llama_model_default_params()
params.use_extra_bufts = True
model = lib.llama_model_load_from_file(sys.argv[1].encode(), params)
print("loaded" if model else "failed")
"""


@pytest.fixture(scope="module")
def q4_0(smollm2_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Q4_0 is a type CPU_REPACK (and AMX) lay out; SmolLM2's own Q4_1 is not."""
    return quantize(smollm2_f16, tmp_path_factory.mktemp("q") / "q4_0.gguf", "q4_0", threads=2).path


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def _load(model: Path, policy: str) -> tuple[dict, str]:
    """(what the engine reports, llama.cpp's load log) for one load under ``policy``."""
    done = _run(LOAD, str(model), policy)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def _buffers_in(log: str) -> set[str]:
    """The weight buffer types llama.cpp allocated, from its ``<TYPE> model buffer size = ...`` lines."""
    return {line.split("model buffer size")[0].split()[-1] for line in log.splitlines() if "model buffer size" in line}


def _available() -> list[str]:
    done = _run("from bpo_local.backends.llamacpp import buffers; print(','.join(buffers.available()))")
    assert done.returncode == 0, done.stderr
    return [n for n in done.stdout.strip().split(",") if n]


def test_auto_leaves_out_only_amx(q4_0: Path) -> None:
    available = _available()
    report, log = _load(q4_0, "auto")
    assert report["excluded"] == [n for n in available if n == "AMX"]
    assert report["offered"] == [n for n in available if n != "AMX"]
    assert "AMX" not in _buffers_in(log)
    assert len(report["tokens"]) == 4
    if "CPU_REPACK" in available:  # what non-AMX machines load is unchanged: repacked weights stay
        assert "CPU_REPACK" in _buffers_in(log)


def test_none_loads_plain_cpu_buffers(q4_0: Path) -> None:
    report, log = _load(q4_0, "none")
    assert report["offered"] == [] and _buffers_in(log) <= {"CPU", "CPU_Mapped"}
    assert len(report["tokens"]) == 4


def test_leaving_a_type_out_changes_what_llama_cpp_loads_into(q4_0: Path) -> None:
    """The mechanism behind auto, on any machine: rewrite the extra-type list and llama.cpp no longer uses the
    left-out type even with use_extra_bufts on (here CPU_REPACK stands in for AMX)."""
    if "CPU_REPACK" not in _available():
        pytest.skip("this llama.cpp build offers no CPU_REPACK buffer type to leave out")
    kept = _run(RAW_LOAD, str(q4_0), "CPU_REPACK")
    dropped = _run(RAW_LOAD, str(q4_0), "")
    assert kept.stdout.strip() == dropped.stdout.strip() == "loaded"
    assert "CPU_REPACK" in _buffers_in(kept.stderr)
    assert "CPU_REPACK" not in _buffers_in(dropped.stderr)


def test_amx_machines_generate_without_crashing(q4_0: Path) -> None:
    if "AMX" not in _available():
        pytest.skip("no AMX here (this CPU or llama.cpp build offers no AMX buffer type: `lscpu | grep amx`); "
                    "the AMX workaround is only exercised on Sapphire Rapids or later Xeons")
    report, log = _load(q4_0, "auto")
    assert report["excluded"] == ["AMX"] and "AMX" not in _buffers_in(log)
    assert len(report["tokens"]) == 4


def test_the_cli_takes_the_policy_from_a_flag_or_the_config(run_cli, q4_0: Path, bpo_home: Path) -> None:
    done = run_cli("optimize", "--model", str(q4_0), "--cpu-buffers", "none", "--max-tokens", "4", "--no-log", "hi")
    assert done.returncode == 0, done.stderr
    (bpo_home / "config.toml").write_text('cpu_buffers = "fast"\n')
    done = run_cli("optimize", "--model", str(q4_0), "hi")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: cpu_buffers = 'fast' in {bpo_home / 'config.toml'} is not one of auto, all, none"]


def test_doctor_says_what_was_chosen_and_why(run_cli) -> None:
    report = json.loads(run_cli("doctor", "--json").stdout)["llama.cpp"]["cpu_buffers"]
    assert report["policy"] == "auto" and "AMX" not in report["used"]
    assert len(report["why"]) == len(report["left_out"])
    none = json.loads(run_cli("doctor", "--json", "--cpu-buffers", "none").stdout)["llama.cpp"]["cpu_buffers"]
    assert none["used"] == []
