"""Running the app under uvicorn on a bound socket, with a graceful stop on SIGTERM or Ctrl-C.

The stop refuses new connections and gives the requests in flight ``grace`` seconds; then BPO's
generations still running are cancelled, so each of their clients gets what was produced (flagged
``cancelled``), and every request still waiting (queued, or on the upstream) gets a 503 in its API's shape
instead of a dropped connection; the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from types import FrameType

import uvicorn
from starlette.applications import Starlette

_LAST_WORDS_SECONDS = 5.0
"""After the grace, how long cancelled requests get to send their answers before uvicorn drops them."""


class _Server(uvicorn.Server):
    """uvicorn's server, which also starts the grace timer when it is first told to exit."""

    def __init__(self, config: uvicorn.Config, grace: float, app: Starlette) -> None:
        super().__init__(config)
        self._grace = grace
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            timer = threading.Timer(self._grace, self._cancel_running)
            timer.daemon = True
            timer.start()

    def _cancel_running(self) -> None:
        state = getattr(self._app.state, "bpo", None)
        if state is not None:
            state.close()


def serve(app: Starlette, sock: socket.socket, *, grace: float, debug: bool) -> bool:
    """Serve ``app`` on ``sock`` until SIGTERM or Ctrl-C, a line per request and the server's warnings on
    stderr; whether it started at all."""
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("bpo_local.serve")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    config = uvicorn.Config(app, log_level="info" if debug else "warning", access_log=debug, lifespan="on",
                            timeout_graceful_shutdown=grace + _LAST_WORDS_SECONDS)
    server = _Server(config, grace, app)
    # uvicorn handles SIGTERM and Ctrl-C (a graceful stop), then raises them again for the previous
    # handlers: make those no-ops so a server stopped on purpose exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    server.run(sockets=[sock])
    return server.started
