"""A real `bpo-local serve` process on 127.0.0.1 (port 0: it reports the port it got)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _cli_helpers import cli_command
from _llama_server import die_with_parent, server_env

_SERVING = re.compile(r"serving .* on (http://\S+?)(,|$)", re.M)

rewrites_without_a_deadline = False
"""Set by the suite's conftest: a proxy gets ``--rewrite-timeout 0`` unless the test gives its own, so no test's
rewrite depends on how fast a loaded machine decodes. Benchmarks never load the conftest: they run serve's
default deadline, as users do."""


@dataclass
class BpoServer:
    process: subprocess.Popen
    url: str
    log: Path
    home: Path

    @classmethod
    def start(cls, model: Path | None, *args: str, home: Path, env: dict[str, str] | None = None,
              timeout: float = 120) -> BpoServer:
        """``bpo-local serve --model MODEL --port 0 ARGS`` with its data in ``home``; waits for /health.
        ``model`` None leaves --model out (pass ``--server URL`` in ``args``)."""
        home.mkdir(parents=True, exist_ok=True)
        if rewrites_without_a_deadline and "--upstream" in args and "--rewrite-timeout" not in args:
            args = (*args, "--rewrite-timeout", "0")
        log = home / f"serve-{time.monotonic_ns()}.log"
        full_env = {**server_env(), "NO_COLOR": "1", "BPO_LOCAL_HOME": str(home), **(env or {})}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                cli_command("serve", *(("--model", str(model)) if model else ()), "--port", "0", "--threads", "1", *args),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}: {log.read_text()}")
            found = _SERVING.search(log.read_text())
            if found:
                server = cls(process, found.group(1), log, home)
                httpx.get(f"{server.url}/health", timeout=timeout).raise_for_status()
                return server
            time.sleep(0.05)
        process.kill()
        raise RuntimeError(f"serve not ready after {timeout} s: {log.read_text()}")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def logged(self, search: str | None = None, timeout: float = 30) -> list[dict]:
        """Run-log entries matching ``search``, waiting for the first (the owner logs after answering)."""
        from bpo_local.runlog import RunLog

        deadline = time.monotonic() + timeout
        while True:
            with RunLog.open(self.home / "logs.db") as log:
                entries = log.query(search)
            if entries or time.monotonic() > deadline:
                return entries
            time.sleep(0.1)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> BpoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
