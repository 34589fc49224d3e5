"""`bpo-local optimize` as a user runs it: real subprocesses on the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _cli_helpers import assert_error_line, assert_one_line_error, cli_command, cli_env, model_args

from bpo_local.runlog import RunLog

PROMPT = "how do I bake bread at home?"
NON_EMPTY = ("--temperature", "1.2", "--seed", "1")
"""SmolLM2 often ends a stable-mode answer at once; this seed makes it write something for PROMPT."""


def test_an_empty_rewrite_prints_an_empty_line_and_warns_on_stderr(run_cli, smollm2_gguf: Path,
                                                                   bpo_home: Path) -> None:
    # SmolLM2 is no BPO model: greedy, it ends at once for this prompt.
    proc = run_cli("optimize", "how can I create a profile on Facebook?", "--temperature", "0", "--no-log",
                   *model_args(smollm2_gguf))
    assert proc.returncode == 0 and proc.stdout == "\n"
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("warning: the rewrite is empty (0 new tokens"), \
        proc.stderr
    assert smollm2_gguf.name in proc.stderr and "Traceback" not in proc.stderr


def test_one_prompt_from_argument_stdin_or_dash_and_as_json(run_cli, smollm2_gguf: Path, bpo_home: Path) -> None:
    opts = model_args(smollm2_gguf, "--max-tokens", "12", *NON_EMPTY)
    from_arg = run_cli("optimize", PROMPT, *opts)
    from_stdin = run_cli("optimize", *opts, "--no-log", input=PROMPT + "\n")
    from_dash = run_cli("optimize", "-", *opts, "--no-log", input=PROMPT)
    as_json = run_cli("optimize", PROMPT, "--json", *opts, "--no-log")
    for proc in (from_arg, from_stdin, from_dash, as_json):
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert from_arg.stdout.strip()
    assert from_arg.stdout == from_stdin.stdout == from_dash.stdout  # same seed, same text

    data = json.loads(as_json.stdout)
    assert data["prompt"] == PROMPT and data["mode"] == "stable"
    assert data["candidates"] == [data["optimized_prompt"]] and from_arg.stdout == data["optimized_prompt"] + "\n"
    assert data["params"] == {"n": 1, "temperature": 1.2, "top_p": 0.9, "top_k": 50, "max_tokens": 12, "seed": 1}
    assert data["model"] == smollm2_gguf.name
    assert data["finish_reasons"][0] in ("stop", "length")
    timings = data["timings"]
    assert 0 < timings["generated_tokens"] <= 12 and timings["prompt_tokens"] > 20 and timings["total_seconds"] > 0

    with RunLog.open(bpo_home / "logs.db") as log:  # only the run without --no-log
        entries = log.query()
    assert [(e["prompt"], e["output"], e["seed"]) for e in entries] == [(PROMPT, data["optimized_prompt"], 1)]
    assert entries[0]["model"] == smollm2_gguf.name


def test_aggressive_candidates_are_separated_by_dashes(run_cli, smollm2_gguf: Path) -> None:
    opts = model_args(smollm2_gguf, "-a", "-n", "3", "--max-tokens", "10", "--seed", "3", "--no-log")
    text = run_cli("optimize", PROMPT, *opts)
    as_json = run_cli("optimize", PROMPT, "--json", *opts)
    assert text.returncode == as_json.returncode == 0, text.stderr
    data = json.loads(as_json.stdout)
    assert data["mode"] == "aggressive" and len(data["candidates"]) == 3
    assert text.stdout == "\n---\n".join(data["candidates"]) + "\n"
    assert all("\n" not in c for c in data["candidates"])  # aggressive stops at a newline


def test_jsonl_batch_keeps_order_and_records_a_malformed_line(run_cli, smollm2_gguf: Path, bpo_home: Path) -> None:
    lines = ['{"prompt": "write a poem", "id": 1}', "{not json", '{"instruction": "explain tides", "id": 3}', ""]
    proc = run_cli("optimize", "--jsonl", *model_args(smollm2_gguf, "--max-tokens", "6", "--seed", "2"),
                   input="\n".join(lines))
    assert proc.returncode == 1
    assert_error_line(proc.stderr, "1 input(s) failed")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["prompt"] == "write a poem" and records[0]["id"] == 1 and "optimized_prompt" in records[0]
    assert set(records[1]) == {"line", "input_sha256", "error"} and "not valid JSON" in records[1]["error"]
    assert records[2]["instruction"] == "explain tides" and "optimized_prompt" in records[2]
    assert "candidates" not in records[0]
    with RunLog.open(bpo_home / "logs.db") as log:  # every answered input is logged
        assert sorted(e["prompt"] for e in log.query()) == ["explain tides", "write a poem"]


def test_parallel_batch_gives_the_records_of_a_sequential_one_in_input_order(
    run_cli, smollm2_gguf: Path, bpo_test_data: Path, bpo_home: Path
) -> None:
    dataset = json.loads(bpo_test_data.read_text(encoding="utf-8"))[:7]
    lines = [json.dumps(d) for d in dataset[:3]] + ['{"no_prompt": 1}'] + [json.dumps(d) for d in dataset[3:]]
    opts = model_args(smollm2_gguf, "--max-tokens", "10", "--seed", "5")
    runs = {k: run_cli("optimize", "--jsonl", *opts, "--parallel", k, input="\n".join(lines)) for k in ("1", "3")}
    records = {}
    for k, proc in runs.items():
        assert proc.returncode == 1, proc.stderr
        assert_error_line(proc.stderr, "1 input(s) failed")
        records[k] = [json.loads(line) for line in proc.stdout.splitlines()]
    for k in runs:
        assert [r["line"] for r in records[k]] == list(range(1, 9))
        assert [r.get("prompt") for r in records[k]] == [d["prompt"] for d in dataset[:3]] + [None] + \
            [d["prompt"] for d in dataset[3:]]
        assert "no prompt" in records[k][3]["error"]
    assert [sorted(r) for r in records["3"]] == [sorted(r) for r in records["1"]]
    assert [r["input_sha256"] for r in records["3"]] == [r["input_sha256"] for r in records["1"]]
    with RunLog.open(bpo_home / "logs.db") as log:  # both runs logged every answer
        assert len(log.query()) == 14


def test_lines_batch_answers_line_for_line(run_cli, smollm2_gguf: Path, tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_bytes(b"write a haiku\n\nname three rivers\ncaf\xe9\n")
    opts = model_args(smollm2_gguf, "--max-tokens", "4", "--seed", "4", "--no-log")
    plain = run_cli("optimize", "--lines", str(source), *opts)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.splitlines() == [
        "error: line 4: line is not valid UTF-8 (byte 4)", "error: 1 input(s) failed; their output lines are empty",
    ]
    out = plain.stdout.split("\n")
    assert len(out) == 5 and out[1] == out[3] == out[4] == ""  # blank and failed lines stay blank
    as_json = run_cli("optimize", "--lines", "--json", str(source), *opts)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["line"], r.get("prompt")) for r in records] == [(1, "write a haiku"), (3, "name three rivers"), (4, None)]
    assert "not valid UTF-8" in records[2]["error"] and as_json.returncode == 1
    escaped = [r["optimized_prompt"].replace("\\", "\\\\").replace("\n", "\\n") for r in records[:2]]
    assert [out[0], out[2]] == escaped


@pytest.mark.parametrize("parallel", ["1", "3"])
def test_resume_after_kill_answers_every_input_exactly_once_in_order(
    run_cli, smollm2_gguf: Path, bpo_test_data: Path, tmp_path: Path, parallel: str
) -> None:
    dataset = json.loads(bpo_test_data.read_text(encoding="utf-8"))[:16]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in dataset), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ("optimize", "--jsonl", str(source), "--resume", str(out),
            *model_args(smollm2_gguf, "--max-tokens", "8", "--seed", "9", "--no-log", "--parallel", parallel))
    victim = subprocess.Popen(cli_command(*args), env=cli_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while out.read_bytes().count(b"\n") < 2 if out.exists() else True:
        assert victim.poll() is None and time.monotonic() < deadline, "batch ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    written_before = out.read_bytes().count(b"\n")
    assert 2 <= written_before < len(dataset)

    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == ""
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(dataset) + 1))
    assert [r["prompt"] for r in records] == [d["prompt"] for d in dataset]
    assert all(isinstance(r["optimized_prompt"], str) for r in records)

    again = run_cli(*args)  # nothing left to do: the model is not even loaded
    assert again.returncode == 0 and out.read_text(encoding="utf-8").count("\n") == len(dataset)


def test_resume_redoes_failed_records_only_and_refuses_a_changed_answered_line(
    run_cli, smollm2_gguf: Path, tmp_path: Path, bpo_home: Path
) -> None:
    long_prompt = "please " * 600  # over --ctx 512, inside 2048: fails, then succeeds on the same line
    lines = ['{"prompt": "write a poem"}', '{"prompt": "explain tides"}', "{not json", json.dumps({"prompt": long_prompt})]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ("optimize", "--jsonl", str(source), "--resume", str(out))
    first = run_cli(*args, *model_args(smollm2_gguf, "--max-tokens", "6", "--seed", "2"))
    assert first.returncode == 1 and "2 input(s) failed" in first.stderr
    before = out.read_text(encoding="utf-8").splitlines()
    assert ["error" in json.loads(line) for line in before] == [False, False, True, True]

    lines[2] = '{"prompt": "name three rivers"}'  # the user fixes line 3; line 4 stays as it was
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    second = run_cli(*args, *model_args(smollm2_gguf, "--max-tokens", "6", "--seed", "2", "--ctx", "2048"))
    assert second.returncode == 0, second.stderr
    after = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in after]
    assert [r["line"] for r in records] == [1, 2, 3, 4] and after[:2] == before[:2]
    assert all("error" not in r for r in records) and records[2]["prompt"] == "name three rivers"
    with RunLog.open(bpo_home / "logs.db") as log:  # the answered lines were not optimized again
        assert sorted(e["prompt"] for e in log.query()) == sorted(
            ["write a poem", "explain tides", "name three rivers", long_prompt.strip()])

    lines[0] = '{"prompt": "write a song"}'  # a line that was answered changed: its answer is not for it
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_one_line_error(run_cli(*args, *model_args(smollm2_gguf)), 2, "line 1 changed", "new output file")
    assert out.read_text(encoding="utf-8").splitlines() == after


def test_piping_lines_into_head_stops_quietly(smollm2_gguf: Path, tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt number {i}\n" for i in range(12)), encoding="utf-8")
    args = ("optimize", "--lines", *model_args(smollm2_gguf, "--max-tokens", "4", "--seed", "6", "--no-log"))
    with open(source, "rb") as stdin:
        producer = subprocess.Popen(cli_command(*args), stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=cli_env())
        head = subprocess.Popen(["head", "-1"], stdin=producer.stdout, stdout=subprocess.PIPE)
        producer.stdout.close()
        first, _ = head.communicate(timeout=120)
        _, stderr = producer.communicate(timeout=120)
    assert first.endswith(b"\n") and first.count(b"\n") == 1
    assert stderr == b"", stderr.decode()
    assert producer.returncode == 0


def test_bad_prompts_fail_with_one_line_and_usage_exit_code(run_cli, smollm2_gguf: Path) -> None:
    opts = model_args(smollm2_gguf, "--max-tokens", "4", "--no-log")
    assert_one_line_error(run_cli("optimize", "", *opts), 2, "empty prompt")
    assert_one_line_error(run_cli("optimize", *opts, input=" \n\t\n"), 2, "empty prompt")
    latin1 = run_cli("optimize", *opts, input=b"caf\xe9 au lait", text=False)
    assert latin1.returncode == 2 and latin1.stdout == b""
    assert_error_line(latin1.stderr, "stdin is not valid UTF-8")
    latin1_arg = "caf\udce9"  # the Latin-1 byte 0xE9 in argv, as Python decodes it
    assert_one_line_error(run_cli("optimize", latin1_arg, *opts), 2, "argument is not valid UTF-8")
    assert_one_line_error(run_cli("optimize", "x", "--resume", "out.jsonl", *opts), 2, "--resume", "--jsonl")
    assert_one_line_error(run_cli("optimize", "x", "--parallel", "2", *opts), 2, "--parallel", "--jsonl")
    zero = run_cli("optimize", "--jsonl", "--parallel", "0", *opts, input="{}")
    assert zero.returncode == 2 and "argument --parallel: '0' is not a whole number >= 1" in zero.stderr
    long_prompt = "please " * 600
    assert_one_line_error(run_cli("optimize", long_prompt, *opts), 2, "context")


def test_unusable_models_fail_with_one_line(run_cli, smollm2_gguf: Path, tmp_path: Path) -> None:
    """A model the user named wrongly is a usage error (2); a damaged file is a failure (1)."""
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a model\n" * 100)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_gguf.read_bytes()[: smollm2_gguf.stat().st_size // 2])
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", str(tmp_path / "missing.gguf")), 2, "not found")
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", "bpo:q4_k_m"), 2, "no build named 'bpo:q4_k_m'")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", str(folder)), 2, "is a directory", ".gguf file inside")
    (folder / "config.json").write_text("{}")
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", str(folder)), 2, "Hugging Face checkpoint folder",
                          f"bpo-local convert {folder}")
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", str(not_gguf)), 1, "notes.gguf")
    assert_one_line_error(run_cli("optimize", PROMPT, "--model", str(truncated)), 1, "truncated.gguf")
    assert_one_line_error(run_cli("optimize", PROMPT), 2, "no model", "bpo-local convert")
