"""A relay on 127.0.0.1 in front of a real server that keeps every exchange: what a proxy forwarded and
what the real server answered, byte for byte.

Tests compare the proxy's answer with the answer the real server gave to the very request the proxy made,
never with a second generation (two llama.cpp generations match only when their batch shapes and cache
state do, which the rest of the suite changes).

    with RecordingUpstream.start(llama_server.url) as upstream:
        ...  # point the proxy at f"{upstream.url}/v1"
        exchange = upstream.last("/v1/chat/completions")
        exchange.request["messages"], exchange.answer_text()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from _llama_server import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Exchange:
    """One request the relay passed on, and the real server's answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answer_headers: dict[str, str] = field(default_factory=dict)
    answer: bytes = b""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def request(self) -> dict:
        return json.loads(self.body)

    def events(self) -> list[dict]:
        """The answer's server-sent events, once the answer is complete."""
        assert self.done.wait(60), f"{self.path}: the answer never ended"
        lines = [line[5:].strip() for line in self.answer.decode().splitlines() if line.startswith("data:")]
        return [json.loads(line) for line in lines if line != "[DONE]"]

    def answer_text(self) -> str:
        """The assistant's text in a chat answer, whole (JSON) or streamed (server-sent events)."""
        assert self.done.wait(60), f"{self.path}: the answer never ended"
        if "text/event-stream" not in self.answer_headers.get("content-type", ""):
            return json.loads(self.answer)["choices"][0]["message"]["content"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.events() if c["choices"])

    def completion_text(self) -> str:
        """The text of a streamed llama-server ``/completion`` answer."""
        return "".join(event["content"] for event in self.events())


class RecordingUpstream:
    """Forwards every request to ``target`` unchanged, streams the answer back, and keeps both."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._client = httpx.AsyncClient(timeout=None)
        app = Starlette(routes=[Route("/{path:path}", self._relay, methods=["GET", "POST", "PUT", "DELETE"])])
        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @classmethod
    def start(cls, target: str, timeout: float = 30) -> RecordingUpstream:
        relay = cls(target)
        relay._thread.start()
        deadline = time.monotonic() + timeout
        while not relay._server.started:
            if time.monotonic() > deadline or not relay._thread.is_alive():
                raise RuntimeError(f"recording relay on {relay.url} did not start")
            time.sleep(0.02)
        return relay

    async def _relay(self, request: Request) -> StreamingResponse:
        body = await request.body()
        exchange = Exchange(request.method, request.url.path, dict(request.headers), body)
        self.exchanges.append(exchange)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = await self._client.send(
            self._client.build_request(request.method, f"{self.target}{request.url.path}", params=request.query_params,
                                       headers=headers, content=body), stream=True)
        exchange.status, exchange.answer_headers = upstream.status_code, dict(upstream.headers)

        async def passed_on() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_bytes():
                    exchange.answer += chunk
                    yield chunk
            finally:
                await upstream.aclose()
                exchange.done.set()

        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(passed_on(), status_code=upstream.status_code, headers=kept)

    def last(self, path: str) -> Exchange:
        """The newest exchange on ``path``."""
        return next(e for e in reversed(self.exchanges) if e.path == path)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
