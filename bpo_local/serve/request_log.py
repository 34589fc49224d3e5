"""A line per request, as Ollama, llama-server and uvicorn print them: method, path, status, time taken, and what
the proxy did with the turn (``X-BPO-Turn``)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = logging.getLogger("bpo_local.serve.requests")


class RequestLog:
    """ASGI middleware: logs each HTTP request once its answer has been sent (or the client has gone)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status, turn = 0, ""

        async def sending(message: Message) -> None:
            nonlocal status, turn
            if message["type"] == "http.response.start":
                status = message["status"]
                turn = dict(message.get("headers") or []).get(b"x-bpo-turn", b"").decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            LOGGER.info("%s %s %s %.2f s%s", scope["method"], scope["path"], status or "-",
                        time.monotonic() - started, f" ({turn})" if turn else "")
