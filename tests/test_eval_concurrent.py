"""`bpo-local eval` with many requests in flight, against real llama-servers on 127.0.0.1: several slots used at
once, a judge that pushes back with 429 and Retry-After (a real relay in front of llama-server), a run killed
mid-judge, and a fleet of two target servers of which one dies mid-run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _llama_server import LlamaServer
from _recording_upstream import RecordingUpstream
from conftest import CliRunner
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from test_eval import assert_piped_stderr, cache_lines, cache_records, started_until

SMALL = ("--max-tokens", "24", "--judge-max-tokens", "32", "--bpo-max-tokens", "24")


def server_args(bpo: str, target: str, judge: str, out: Path, *extra: str, limit: int = 3) -> list[str]:
    """Every role on a server: BPO on ``bpo`` (``--server``), the target and the judge on their URLs."""
    return ["eval", "--server", bpo, "--target", target, "--judge", judge, "--limit", str(limit), *SMALL,
            "--out", str(out), "--json", *extra]


class Relay(RecordingUpstream):
    """The recording relay, which also counts the chat requests in flight at once and, while ``refuse`` is
    above 0, answers a chat request with HTTP 429 and ``Retry-After: wait`` instead of passing it on."""

    refuse = 0
    wait = "1"

    def __init__(self, target: str, *options: Any) -> None:
        super().__init__(target, *options)
        self.refused_at: list[float] = []
        self.passed_at: list[float] = []
        self.in_flight = self.most_in_flight = 0

    async def _relay(self, request: Request) -> Response:  # type: ignore[override]
        if not request.url.path.endswith("/chat/completions"):
            return await super()._relay(request)
        if self.refuse > 0:
            self.refuse -= 1
            self.refused_at.append(time.monotonic())
            return JSONResponse({"error": {"message": "rate limit reached"}}, status_code=429,
                                headers={"Retry-After": self.wait})
        self.passed_at.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        response = await super()._relay(request)
        response.background = BackgroundTask(self._ended)
        return response

    async def _ended(self) -> None:
        self.in_flight -= 1


@pytest.fixture
def relay(llama_server: LlamaServer):
    with Relay.start(llama_server.url) as relay:
        yield relay


def test_answers_and_judgments_keep_the_slots_busy_and_are_the_units_of_one_at_a_time(
        llama_server: LlamaServer, relay: Relay, tmp_path: Path, run_cli: CliRunner) -> None:
    out = tmp_path / "concurrent"
    proc = run_cli(*server_args(llama_server.url, relay.url, relay.url, out, "--parallel", "4"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert relay.most_in_flight >= 2  # the target and the judge had several requests at once
    assert report["results"][0]["judged"] == 3 and all(c["failed"] == 0 for c in report["stages"].values())
    lines = {m.group(1): m for m in assert_piped_stderr(proc.stderr, out)}  # one line per stage, when piped
    assert lines.keys() == {"optimize", "answer", "judge"}
    assert lines["judge"].group(2) == lines["judge"].group(3) == "6" and lines["judge"].group(7)  # a rate
    assert cache_lines(out) == {stage: c["total"] for stage, c in report["stages"].items()}  # each unit once

    # One at a time from the same rewrites and answers: the judge's units are the same (keys depend on what
    # was judged, never on the order it finished in).
    sequential = tmp_path / "sequential"
    (sequential / "cache").mkdir(parents=True)
    for stage in ("optimize", "answer"):
        (sequential / "cache" / f"{stage}.jsonl").write_bytes((out / "cache" / f"{stage}.jsonl").read_bytes())
    relay.most_in_flight = 0
    proc = run_cli(*server_args(llama_server.url, relay.url, relay.url, sequential, "--parallel", "1"))
    assert proc.returncode == 0, proc.stderr
    assert relay.most_in_flight == 1
    again = json.loads(proc.stdout)
    assert again["stages"]["judge"]["computed"] == 6 and again["pairs"][0]["prompt"] == report["pairs"][0]["prompt"]
    assert cache_records(sequential)["judge"].keys() == cache_records(out)["judge"].keys()


def test_a_judge_answering_429_is_waited_out_and_every_pair_is_judged(
        llama_server: LlamaServer, relay: Relay, tmp_path: Path, run_cli: CliRunner) -> None:
    relay.refuse, relay.wait = 3, "1"
    out = tmp_path / "out"
    proc = run_cli(*server_args(llama_server.url, llama_server.url, relay.url, out, "--parallel", "2", limit=2))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(relay.refused_at) == 3 and report["results"][0]["judged"] == 2
    assert report["stages"]["judge"] == {"total": 4, "cached": 0, "computed": 4, "failed": 0}
    assert min(relay.passed_at) >= relay.refused_at[0] + 1.0  # Retry-After: 1 was honoured by every request


def test_a_judge_that_never_stops_pushing_back_fails_its_pairs_and_says_why(
        llama_server: LlamaServer, relay: Relay, tmp_path: Path, run_cli: CliRunner) -> None:
    relay.refuse, relay.wait = 1000, "0"
    proc = run_cli(*server_args(llama_server.url, llama_server.url, relay.url, tmp_path / "out", limit=1))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("error: 1 pair(s) failed before a verdict;")
    (pair,) = json.loads(proc.stdout)["pairs"]
    assert pair["error"].startswith("judge: ") and "answered HTTP 429: rate limit reached" in pair["error"]
    assert "pushed back 10 times" in pair["error"] and not relay.passed_at


def test_killed_mid_judge_resumes_with_nothing_redone(llama_server: LlamaServer, tmp_path: Path,
                                                      run_cli: CliRunner) -> None:
    out = tmp_path / "out"
    args = server_args(llama_server.url, llama_server.url, llama_server.url, out, "--judge-max-tokens", "96")
    process = started_until(args, out / "cache" / "judge.jsonl")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before, kept = cache_lines(out), cache_records(out)
    assert 1 <= before["judge"] < 6

    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    for stage, count in resumed["stages"].items():
        assert count["cached"] == before[stage] and count["computed"] == count["total"] - before[stage], stage
    assert cache_lines(out) == {stage: c["total"] for stage, c in resumed["stages"].items()}  # nothing twice
    finished = cache_records(out)
    assert all(finished[stage][key] == record for stage, records in kept.items() for key, record in records.items())
    assert resumed["results"][0]["judged"] == 3


def test_two_target_servers_one_killed_mid_run_lose_nothing(llama_server: LlamaServer, smollm2_gguf: Path,
                                                           tmp_path: Path, run_cli: CliRunner) -> None:
    with LlamaServer.start(smollm2_gguf, slots=2, log_dir=tmp_path) as first, \
            LlamaServer.start(smollm2_gguf, slots=2, log_dir=tmp_path) as second:
        out = tmp_path / "out"
        args = server_args(llama_server.url, f"{first.url},{second.url}", llama_server.url, out, "--limit", "4",
                           "--max-tokens", "64", "--parallel", "2")
        process = started_until(args, out / "cache" / "answer.jsonl")
        second.kill()
        killed_at = cache_lines(out)["answer"]
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    answer = report["stages"]["answer"]
    assert killed_at < answer["total"]  # the kill came with answers still to do
    assert answer["failed"] == 0 and answer["computed"] == answer["total"] == cache_lines(out)["answer"]
    assert report["results"][0]["judged"] == 4 and all(p.get("error") is None for p in report["pairs"])
    assert report["settings"]["target"]["model"] == str(smollm2_gguf)
