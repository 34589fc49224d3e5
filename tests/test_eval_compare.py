"""`bpo-local eval --optimizer A --optimizer B` end to end on SmolLM2 (BPO's stable preset and PAS on the same
stand-in): each optimizer against the original prompts, the two head to head, one table, one report, and a
SIGKILL in the middle of the head-to-head resumed. Real CLI subprocesses; generations are compared only with
the cache records they came from, never with a second generation."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import assert_one_line_error, cli_command, cli_env
from conftest import CliRunner
from test_eval import LIMIT, cache_lines, cache_records, eval_args, finished_run, results

OPTIMIZERS = ("--optimizer", "stable", "--optimizer", "pas")


def compare_args(model: Path, out: Path, *extra: str) -> list[str]:
    return eval_args(model, out, *OPTIMIZERS, *extra)


def computed(report: dict[str, Any]) -> dict[str, int]:
    """Units each comparison's stages computed, by the comparison's label."""
    return {f"{i} {stage}": count["computed"] for i, each in enumerate([*report["optimizers"], *report["head_to_head"]])
            for stage, count in each["stages"].items()}


@pytest.fixture(scope="module")
def compared(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("compare") / "out"
    return out, finished_run(compare_args(smollm2_gguf, out))


def test_each_optimizer_against_the_original_and_the_two_head_to_head(compared: tuple[Path, dict[str, Any]]) -> None:
    out, report = compared
    stable, pas = report["optimizers"]
    (duel,) = report["head_to_head"]
    assert [o["settings"]["bpo"]["mode"] for o in (stable, pas)] == ["stable", "pas"]
    s = duel["settings"]
    assert (s["a"], s["b"]) == (stable["settings"]["bpo"], pas["settings"]["bpo"])
    assert s["judge"]["orders"] == ["b_first", "a_first"] and s["target"] == stable["settings"]["target"]
    for pair, mine, theirs in zip(duel["pairs"], stable["pairs"], pas["pairs"], strict=True):
        assert pair["prompt"] == mine["prompt"] == theirs["prompt"]
        assert (pair["a_prompt"], pair["b_prompt"]) == (mine["optimized_prompt"], theirs["optimized_prompt"])
        # the very answers the optimizers were judged with against the original (one cache record each)
        assert pair["answers"] == {"b": theirs["answers"]["optimized"], "a": mine["answers"]["optimized"]}
        assert list(pair["judgments"]) == ["b_first", "a_first"] and all(j["text"] for j in pair["judgments"].values())
        outcomes = [j["outcome"] for j in pair["judgments"].values()]
        assert pair["outcome"] == ("invalid" if "invalid" in outcomes else outcomes[0] if len(set(outcomes)) == 1
                                   else "tie")
    (result,) = duel["results"]
    assert result["items"] == result["judged"] == LIMIT
    assert result["win"] + result["tie"] + result["loss"] + result["invalid"] == LIMIT
    assert duel["stages"]["head-to-head"]["total"] == 2 * LIMIT  # both orders of every item
    judged = sum(n for unit, n in computed(report).items() if unit.endswith(("judge", "head-to-head")))
    assert cache_lines(out)["judge"] == judged  # nothing judged twice


def test_one_markdown_report_holds_both_kinds_of_comparison(compared: tuple[Path, dict[str, Any]]) -> None:
    out, report = compared
    markdown = (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text()) == report
    assert markdown.startswith("# Optimizer comparison\n") and markdown.count("# BPO evaluation") == 2
    stable, pas = (f"{mode} ({report['optimizers'][0]['settings']['bpo']['model']})" for mode in ("stable", "pas"))
    for label in (f"{stable} vs original", f"{pas} vs original", f"{stable} vs {pas}"):
        assert f"| {label} | vicuna_eval | {LIMIT} | {LIMIT} |" in markdown
    head, section = markdown.split(f"# Head to head: {stable} vs {pas}\n")
    assert f"| data set | pairs | judged | {stable} win | tie | {stable} loss |" in section
    for pair in report["head_to_head"][0]["pairs"]:
        assert f"## vicuna_eval {pair['id']}: {pair['outcome']}" in section
        for text in (pair["b_prompt"], pair["answers"]["a"], pair["answers"]["b"],
                     *(j["text"] for j in pair["judgments"].values())):
            assert text in section
    assert section.count(f"### Judge, {pas}'s answer as A") == section.count(f"### Judge, {stable}'s answer as A") \
        == LIMIT


def test_the_table_and_a_rerun_that_computes_nothing(compared: tuple[Path, dict[str, Any]], smollm2_gguf: Path,
                                                     run_cli: CliRunner) -> None:
    out, report = compared
    proc = run_cli(*[a for a in compare_args(smollm2_gguf, out) if a != "--json"])
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert table.count("vicuna_eval") == 3 and "comparison" in table and "original" in table and " vs " in table
    again = json.loads((out / "report.json").read_text())
    assert set(computed(again).values()) == {0}
    assert [results(each) for each in [*again["optimizers"], *again["head_to_head"]]] == \
        [results(each) for each in [*report["optimizers"], *report["head_to_head"]]]


def test_killed_in_the_head_to_head_resumes_it(smollm2_gguf: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    out = tmp_path / "out"
    args = compare_args(smollm2_gguf, out, "--parallel", "1")  # one judgment at a time: a window to kill it in
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    judgments = out / "cache" / "judge.jsonl"
    deadline = time.monotonic() + 400
    while not (judgments.is_file() and judgments.read_text().count("\n") > 2 * 2 * LIMIT):  # into the head-to-head
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (out / "report.json").exists()
    before, kept = cache_lines(out), cache_records(out)

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    assert all(c["computed"] == 0 for each in resumed["optimizers"] for c in each["stages"].values())
    duel = resumed["head_to_head"][0]["stages"]["head-to-head"]
    assert duel["cached"] >= 1 and duel["computed"] == duel["total"] - duel["cached"] and duel["failed"] == 0
    assert cache_lines(out) == {**before, "judge": before["judge"] + duel["computed"]}  # nothing twice
    finished = cache_records(out)
    assert all(finished[stage][key] == record for stage, records in kept.items() for key, record in records.items())
    assert resumed["head_to_head"][0]["results"][0]["judged"] == LIMIT

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert set(computed(rerun).values()) == {0}
    assert [results(each) for each in rerun["head_to_head"]] == [results(each) for each in resumed["head_to_head"]]


def test_an_optimizer_named_twice_is_one_line(smollm2_gguf: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    proc = run_cli(*eval_args(smollm2_gguf, tmp_path / "out", "--optimizer", "pas", "--optimizer", "pas"))
    assert_one_line_error(proc, 2, "--optimizer pas is given twice")
    assert not (tmp_path / "out").exists()


def test_an_item_an_optimizer_cannot_rewrite_fails_its_head_to_head_too(smollm2_gguf: Path, tmp_path: Path,
                                                                        run_cli: CliRunner) -> None:
    data = tmp_path / "mixed.jsonl"
    long_prompt = "Summarise: " + "river stone cloud " * 400  # beyond BPO's 1024-token context
    data.write_text(json.dumps({"prompt": "Name a colour."}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n")
    proc = run_cli(*compare_args(smollm2_gguf, tmp_path / "out", "--data", str(data)))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("error: 3 pair(s) failed before a verdict;")  # 2 optimizers, 1 pair
    ok, failed = json.loads(proc.stdout)["head_to_head"][0]["pairs"]
    assert ok["outcome"] is not None and ok["error"] is None
    assert failed["outcome"] is None and failed["error"].startswith("the first optimizer's optimize: prompt is")
