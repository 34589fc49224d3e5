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

import asyncio
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
from starlette.responses import JSONResponse, Response, StreamingResponse
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

    def responses_text(self) -> str:
        """The output text of a Responses answer, whole or streamed."""
        assert self.done.wait(60), f"{self.path}: the answer never ended"
        if "text/event-stream" not in self.answer_headers.get("content-type", ""):
            return "".join(part["text"] for item in json.loads(self.answer)["output"] if item["type"] == "message"
                           for part in item["content"] if part["type"] == "output_text")
        return "".join(e["delta"] for e in self.events() if e["type"] == "response.output_text.delta")

    def messages_text(self) -> str:
        """The text of an Anthropic Messages answer, whole or streamed."""
        assert self.done.wait(60), f"{self.path}: the answer never ended"
        if "text/event-stream" not in self.answer_headers.get("content-type", ""):
            return "".join(block["text"] for block in json.loads(self.answer)["content"] if block["type"] == "text")
        return "".join(e["delta"]["text"] for e in self.events()
                       if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta")


class RecordingUpstream:
    """Forwards every request to ``target`` unchanged, streams the answer back, and keeps both. Paths in
    ``missing`` answer 404 as a server without that API does (an older OpenAI-compatible server)."""

    def __init__(self, target: str, missing: tuple[str, ...] = (), delay: float = 0.0) -> None:
        self.target = target.rstrip("/")
        self.missing = missing
        self.delay = delay
        self._stopping = threading.Event()
        self.exchanges: list[Exchange] = []
        self._client = httpx.AsyncClient(timeout=None)
        app = Starlette(routes=[Route("/{path:path}", self._relay, methods=["GET", "POST", "PUT", "DELETE"])])
        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @classmethod
    def start(cls, target: str, timeout: float = 30, missing: tuple[str, ...] = (),
              delay: float = 0.0) -> RecordingUpstream:
        """``delay``: seconds every request waits before it is passed on (a slow upstream)."""
        relay = cls(target, missing, delay)
        relay._thread.start()
        deadline = time.monotonic() + timeout
        while not relay._server.started:
            if time.monotonic() > deadline or not relay._thread.is_alive():
                raise RuntimeError(f"recording relay on {relay.url} did not start")
            time.sleep(0.02)
        return relay

    async def _relay(self, request: Request) -> Response:
        body = await request.body()
        exchange = Exchange(request.method, request.url.path, dict(request.headers), body)
        self.exchanges.append(exchange)
        if request.url.path in self.missing:
            exchange.status = 404
            exchange.done.set()
            return JSONResponse({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}},
                                status_code=404)
        waited_until = time.monotonic() + self.delay
        while time.monotonic() < waited_until:
            if self._stopping.is_set():
                exchange.status = 503
                exchange.done.set()
                return JSONResponse({"error": {"message": "the relay is stopping", "type": "server_error"}}, 503)
            await asyncio.sleep(0.05)
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
        """Stop; a request still waiting out ``delay`` is answered 503 at once."""
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
