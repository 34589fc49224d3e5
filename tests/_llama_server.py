"""Real llama-server processes on 127.0.0.1 for tests and benchmarks.

The server is llama.cpp's own C++ server as the ``xllamacpp`` wheel ships it, run in a process of its own (it
carries a llama.cpp of its own, which must not meet llama-cpp-python's in one process).

    with LlamaServer.start(model_path, slots=2) as server:
        httpx.get(f"{server.url}/health")
        server.kill()            # SIGKILL, as a dying machine would
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

_RUNNER = """
import signal, sys, threading
import xllamacpp
model, port, slots, threads, ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
params = xllamacpp.CommonParams()
params.model.path = model
params.port = port
params.n_parallel = slots
params.n_ctx = ctx
params.cpuparams.n_threads = threads
params.cpuparams_batch.n_threads = threads
params.verbosity = -1
server = xllamacpp.Server(params)   # listens on 127.0.0.1:port from its own threads
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
"""


def die_with_parent() -> None:
    """A ``preexec_fn``: the server gets SIGTERM if the test process dies (a native abort skips every
    teardown), so no server outlives its run. Linux's PR_SET_PDEATHSIG; elsewhere nothing."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


IDLE_PASSIVELY = {"OMP_WAIT_POLICY": "passive"}
"""Added to a server's environment while the test suite runs (its conftest sets ``servers_idle_passively``):
test servers sit idle between tests, so their OpenMP threads must sleep instead of spinning on the cores the
other tests need. No user runs so (one 128-token SmolLM2 answer decodes 3x slower), so benchmarks, which
never load the conftest, start every server with the caller's environment unchanged."""

servers_idle_passively = False


def server_env() -> dict[str, str]:
    """The environment a server process starts in: the caller's, plus ``IDLE_PASSIVELY`` under the suite."""
    return {**os.environ, **(IDLE_PASSIVELY if servers_idle_passively else {})}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    """One llama-server process serving one GGUF."""

    process: subprocess.Popen
    url: str
    log: Path

    @classmethod
    def start(cls, model: Path, *, slots: int = 2, threads: int = 1, ctx: int = 0, log_dir: Path | None = None,
              timeout: float = 120) -> LlamaServer:
        """Start a server on a free port and wait until ``/health`` says it is ready."""
        port = free_port()
        log = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"llama-server-{port}.log"
        env = server_env()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", _RUNNER, str(model), str(port), str(slots), str(threads), str(ctx)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=die_with_parent)
        server = cls(process, f"http://127.0.0.1:{port}", log)
        server._wait_ready(timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama-server at {self.url} not ready after {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, mid-request if one is running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not leave within 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
