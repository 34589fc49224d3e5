"""`bpo-local eval` end to end on real models: SmolLM2 stands in for BPO, the target and the judge; real CLI
subprocesses, a real llama-server, a real SIGKILL."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import assert_one_line_error, cli_command, cli_env
from _llama_server import LlamaServer, free_port
from conftest import CliRunner

LIMIT = 2
SMALL = ("--max-tokens", "24", "--judge-max-tokens", "32", "--bpo-max-tokens", "24")


def eval_args(model: Path, out: Path, *extra: str, target: str | None = None) -> list[str]:
    return ["eval", "--model", str(model), "--threads", "1", "--ctx", "1024", "--target", target or str(model),
            "--judge", str(model), "--limit", str(LIMIT), *SMALL, "--out", str(out), "--json", *extra]


def cache_lines(out: Path) -> dict[str, int]:
    return {stage: len((out / "cache" / f"{stage}.jsonl").read_text().splitlines())
            for stage in ("optimize", "answer", "judge")}


def cache_records(out: Path) -> dict[str, dict[str, dict]]:
    """Each stage's cached records by key."""
    return {stage: {r["key"]: r for r in map(json.loads, (out / "cache" / f"{stage}.jsonl").read_text().splitlines())}
            for stage in ("optimize", "answer", "judge")}


def results(report: dict[str, Any]) -> dict[str, Any]:
    """What the report says, without what this particular run did (stage counts)."""
    return {k: v for k, v in report.items() if k != "stages"}


def finished_run(args: list[str]) -> dict[str, Any]:
    """The JSON report of ``bpo-local ARGS`` (for module fixtures, which cannot use ``run_cli``); it succeeds
    and says on stderr only what a log should hold (no bars, no status off a terminal)."""
    proc = subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_piped_stderr(proc.stderr, Path(args[args.index("--out") + 1]))
    return json.loads(proc.stdout)


def started_until(args: list[str], cache_file: Path) -> subprocess.Popen:
    """``bpo-local ARGS`` running, once ``cache_file`` holds a finished unit."""
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 300
    while not (cache_file.is_file() and cache_file.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    return process


STAGE_LINE = re.compile(r"(optimize|answer|judge|head-to-head): (\d+)/(\d+) done \((\d+) cached, (\d+) now, "
                        r"(\d+) failed\) in \d+\.\d s(, \d+\.\d/min)?")


def assert_piped_stderr(stderr: str, out: Path) -> list[re.Match[str]]:
    """Off a terminal, stderr is one line per stage, then where the report went; the stage lines' matches."""
    *stages, last = stderr.splitlines()
    assert last == f"report: {out / 'report.md'} and report.json", stderr
    matches = [STAGE_LINE.fullmatch(line) for line in stages]
    assert all(matches), stderr
    return matches  # type: ignore[return-value]


@pytest.fixture(scope="module")
def first_run(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("eval") / "out"
    return out, finished_run(eval_args(smollm2_gguf, out))


def test_counts_add_up_and_both_orders_are_judged(first_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = first_run
    pairs = report["pairs"]
    assert [p["prompt"] for p in pairs] == ["How can I improve my time management skills?",
                                            "What are the most effective ways to deal with stress?"]
    (result,) = report["results"]
    assert result["dataset"] == "vicuna_eval" and result["items"] == result["judged"] == LIMIT
    assert result["win"] + result["tie"] + result["loss"] + result["invalid"] == LIMIT
    assert sum(r["rate"] for r in result["rates"].values()) == pytest.approx(1.0)
    verdicts = [j for p in pairs for j in p["judgments"].values()]
    assert len(verdicts) == 2 * LIMIT and all(j["text"] for j in verdicts)
    assert result["unparseable_verdicts"] == sum(j["verdict"] is None for j in verdicts)
    distinct_prompts = {text for p in pairs for text in (p["prompt"], p["optimized_prompt"])}
    assert report["stages"] == {
        "optimize": {"total": LIMIT, "cached": 0, "computed": LIMIT, "failed": 0},
        "answer": {"total": len(distinct_prompts), "cached": 0, "computed": len(distinct_prompts), "failed": 0},
        "judge": {"total": 2 * LIMIT, "cached": 0, "computed": 2 * LIMIT, "failed": 0},
    }
    assert cache_lines(out) == {"optimize": LIMIT, "answer": len(distinct_prompts), "judge": 2 * LIMIT}
    s = report["settings"]
    assert s["target"]["temperature"] == 0.7 and s["target"]["top_p"] == 1.0 and s["judge"]["temperature"] == 0.0
    assert s["judge"]["prompt"] == "pair-v2" and s["judge"]["orders"] == ["original_first", "optimized_first"]


def test_markdown_report_holds_every_pair(first_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = first_run
    markdown = (out / "report.md").read_text()
    assert "| data set | pairs | judged | BPO win |" in markdown and "| vicuna_eval | 2 | 2 |" in markdown
    for pair in report["pairs"]:
        assert f"## vicuna_eval {pair['id']}: {pair['outcome']}" in markdown
        for text in (pair["prompt"], pair["answers"]["original"], pair["answers"]["optimized"],
                     *(j["text"] for j in pair["judgments"].values())):
            assert text in markdown
    assert markdown.count("### Judge, the original's answer as A") == LIMIT
    assert markdown.count("### Judge, the optimized's answer as A") == LIMIT
    assert json.loads((out / "report.json").read_text()) == report


def test_a_rerun_redoes_nothing_and_reports_the_same(first_run: tuple[Path, dict[str, Any]], smollm2_gguf: Path,
                                                    run_cli: CliRunner) -> None:
    out, report = first_run
    proc = run_cli(*eval_args(smollm2_gguf, out))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert results(again) == results(report)
    assert all(c["computed"] == 0 and c["cached"] == c["total"] for c in again["stages"].values())


def test_killed_mid_run_resumes_without_redoing_a_stage(first_run: tuple[Path, dict[str, Any]], smollm2_gguf: Path,
                                                       tmp_path: Path, run_cli: CliRunner) -> None:
    out = tmp_path / "out"
    args = eval_args(smollm2_gguf, out)
    process = started_until(args, out / "cache" / "answer.jsonl")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = cache_lines(out)
    assert before["optimize"] == LIMIT and before["judge"] < 2 * LIMIT  # it died with work left
    assert not (out / "report.json").exists()
    kept, uninterrupted = cache_records(out), cache_records(first_run[0])
    for stage, records in kept.items():  # up to the kill it did what the first run did, in the same order
        assert all(record == uninterrupted[stage][key] for key, record in records.items()), stage

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    for stage, count in resumed["stages"].items():
        assert count["cached"] == before[stage], stage
        assert count["computed"] == count["total"] - before[stage], stage
    assert cache_lines(out) == {stage: c["total"] for stage, c in resumed["stages"].items()}  # nothing twice
    finished = cache_records(out)
    assert all(finished[stage][key] == record for stage, records in kept.items() for key, record in records.items())
    assert [p["prompt"] for p in resumed["pairs"]] == [p["prompt"] for p in first_run[1]["pairs"]]
    assert resumed["results"][0]["judged"] == first_run[1]["results"][0]["judged"] == LIMIT
    # The work after the kill ran from other cache states than in the first run, so its sampled answers may
    # differ; the report is the one its cache makes, as a rerun that computes nothing shows.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert results(json.loads(again.stdout)) == results(resumed)


def test_bpo_and_the_target_behind_servers(llama_server: LlamaServer, smollm2_gguf: Path, tmp_path: Path,
                                          run_cli: CliRunner) -> None:
    args = eval_args(smollm2_gguf, tmp_path / "out", "--limit", "1", target=llama_server.url)
    args[args.index("--model"):args.index("--model") + 2] = ["--server", llama_server.url]  # BPO on the server too
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["settings"]["target"]["model"] == str(smollm2_gguf)  # the id llama-server lists
    (pair,) = report["pairs"]
    assert pair["optimized_prompt"] is not None and pair["answers"]["original"] and pair["outcome"] is not None
    assert [c["computed"] for c in report["stages"].values()] == [1, len({pair["prompt"], pair["optimized_prompt"]}), 2]


def test_a_pair_that_fails_is_reported_retried_and_the_others_go_on(smollm2_gguf: Path, tmp_path: Path,
                                                                   run_cli: CliRunner) -> None:
    data = tmp_path / "mixed.jsonl"
    long_prompt = "Summarise: " + "river stone cloud " * 400  # beyond BPO's 1024-token context
    data.write_text(json.dumps({"prompt": "Name a colour."}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n")
    args = eval_args(smollm2_gguf, tmp_path / "out", "--data", str(data))
    for _ in range(2):
        proc = run_cli(*args)
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1].startswith("error: 1 pair(s) failed before a verdict;")
        report = json.loads(proc.stdout)
        ok, failed = report["pairs"]
        assert ok["outcome"] is not None and failed["outcome"] is None
        assert failed["error"].startswith("optimize: prompt is") and "context" in failed["error"]
        assert report["stages"]["optimize"]["failed"] == 1  # not cached: the second run tries it again
        assert report["results"][0]["errors"] == 1 and report["results"][0]["judged"] == 1
    assert "### Error" in (tmp_path / "out" / "report.md").read_text()


def test_unreachable_judge_is_one_line_before_any_work(smollm2_gguf: Path, tmp_path: Path,
                                                      run_cli: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = eval_args(smollm2_gguf, tmp_path / "out")
    args[args.index("--judge") + 1] = url
    assert_one_line_error(run_cli(*args), 1, f"--judge {url}: cannot reach {url}/v1/models")
    assert not (tmp_path / "out").exists()


def test_missing_target_model_is_one_line(smollm2_gguf: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    missing = tmp_path / "nope.gguf"
    proc = run_cli(*eval_args(smollm2_gguf, tmp_path / "out", target=str(missing)))
    assert_one_line_error(proc, 2, f"--target {missing}: model file not found")


@pytest.mark.parametrize(("extra", "fragment"), [
    (("--limit", "0"), "--limit must be at least 1 (got 0)"),
    (("--data", "no_such_set"), "no data set 'no_such_set'"),
    (("--top-p", "0"), "--top-p must be in (0, 1]"),
])
def test_usage_errors_are_one_line_and_exit_2(extra: tuple[str, ...], fragment: str, smollm2_gguf: Path,
                                              tmp_path: Path, run_cli: CliRunner) -> None:
    assert_one_line_error(run_cli(*eval_args(smollm2_gguf, tmp_path / "out", *extra)), 2, fragment)
    assert not (tmp_path / "out").exists()


def test_an_empty_data_file_is_one_line(smollm2_gguf: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    proc = run_cli(*eval_args(smollm2_gguf, tmp_path / "out", "--data", str(empty)))
    assert_one_line_error(proc, 2, f"data set {empty} holds no items")
