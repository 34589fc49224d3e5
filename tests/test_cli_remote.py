"""`optimize --server`, `--jsonl --resume` over two servers with one killed, `doctor --server`, `repl --server`."""

from __future__ import annotations

import json
import subprocess
import time

from _cli_helpers import assert_one_line_error, cli_command, cli_env
from _llama_server import LlamaServer
from _repl_helpers import ReplProcess


def test_optimize_on_a_server_prints_the_rewrite_and_logs_it(llama_server, run_cli) -> None:
    proc = run_cli("optimize", "--server", llama_server.url, "--seed", "1", "--max-tokens", "12", "--json", "bake bread")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and out["params"]["max_tokens"] == 12
    entry = json.loads(run_cli("log", "--jsonl").stdout.splitlines()[0])
    assert entry["model_sha256"] is None and entry["backend"] == f"llama-server {llama_server.url}"


def test_unreachable_server_and_model_plus_server_are_one_line_errors(llama_server, smollm2_gguf, run_cli) -> None:
    assert_one_line_error(run_cli("optimize", "--server", "http://127.0.0.1:9", "x"), 1, "cannot reach", "--server")
    assert_one_line_error(run_cli("optimize", "--server", llama_server.url, "--model", str(smollm2_gguf), "x"), 2,
                          "--model and --server")
    assert_one_line_error(run_cli("optimize", "--server", llama_server.url, "--server-kind", "vllm", "x"), 1,
                          "is not a vllm")


def test_doctor_reports_the_server_and_fidelity(llama_server, run_cli) -> None:
    proc = run_cli("doctor", "--json", env={"BPO_LOCAL_SERVER": llama_server.url})
    assert proc.returncode == 0, proc.stderr
    (server,) = json.loads(proc.stdout)["model"]["servers"]
    assert server["kind"] == "llama-server" and server["slots"] == 2 and server["context"] > 0
    assert server["modes"]["stable"] == "exact" and server["modes"]["aggressive"].startswith("same candidates")
    assert server["bpo_vocabulary"] is False  # SmolLM2 is not BPO's Llama-2
    bad = run_cli("doctor", "--server", "http://127.0.0.1:9")
    assert bad.returncode == 1 and "cannot reach" in bad.stdout


def test_a_dataset_over_two_servers_survives_one_dying(smollm2_gguf, tmp_path, run_cli) -> None:
    prompts = [f"write a short poem about the number {i}" for i in range(24)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "out.jsonl"
    with LlamaServer.start(smollm2_gguf, slots=2, log_dir=tmp_path) as a, \
            LlamaServer.start(smollm2_gguf, slots=2, log_dir=tmp_path) as b:
        proc = subprocess.Popen(cli_command("optimize", "--jsonl", str(source), "--resume", str(out), "--server",
                                            f"{a.url},{b.url}", "--parallel", "2", "--max-tokens", "16", "--seed", "3"),
                                env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
            time.sleep(0.05)
        b.kill()  # mid-run: its requests in flight go to the other server
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in records] == list(range(24)) and all("optimized_prompt" in r for r in records)
        again = run_cli("optimize", "--jsonl", str(source), "--resume", str(out), "--server", a.url)
        assert again.returncode == 0 and len(out.read_text().splitlines()) == 24


def test_repl_on_a_server(llama_server) -> None:
    repl = ReplProcess("--server", llama_server.url)
    try:
        banner = repl.wait_prompt()
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in banner
        assert "top_p must be" in repl.run("/top_p 0")
        repl.run("/max 8")
        assert "optimized" in repl.run("bake bread")
        assert repl.exit() == 0
    finally:
        repl.close()
