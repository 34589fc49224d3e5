"""A relay on 127.0.0.1 in front of a real server: it forwards every request as it came, passes the
answer back chunk by chunk, and keeps both, so a test can see what the proxy forwarded and what the
real server answered.

    with RecordingUpstream.start(llama_server.url) as relay:
        ...  # point the proxy at f"{relay.url}/v1"
        relay.exchanges[-1].request_json
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    request: bytes
    status: int = 0
    response: bytes = b""

    @property
    def request_json(self) -> Any:
        return json.loads(self.request)


@dataclass
class RecordingUpstream:
    server: ThreadingHTTPServer
    target: str
    exchanges: list[Exchange] = field(default_factory=list)

    @classmethod
    def start(cls, target: str) -> RecordingUpstream:
        relay: RecordingUpstream

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the answer ends when the connection closes: chunks pass as they come

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else _read_chunked(self) if _chunked(self) else b""
                exchange = Exchange(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                relay.exchanges.append(exchange)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                with httpx.stream(self.command, relay.target + self.path, content=body, headers=headers,
                                  timeout=300) as answer:
                    exchange.status = answer.status_code
                    self.send_response(answer.status_code)
                    for key, value in answer.headers.items():
                        if key.lower() not in _HOP:
                            self.send_header(key, value)
                    self.end_headers()
                    for chunk in answer.iter_raw():
                        exchange.response += chunk
                        self.wfile.write(chunk)
                        self.wfile.flush()

            do_GET = do_POST = _relay

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        relay = cls(server, target.rstrip("/"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return relay

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def chats(self) -> list[Any]:
        """The bodies of the chat requests forwarded so far, oldest first."""
        return [e.request_json for e in self.exchanges if e.path.endswith("/chat/completions")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _chunked(handler: BaseHTTPRequestHandler) -> bool:
    return "chunked" in handler.headers.get("transfer-encoding", "").lower()


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    body = b""
    while size := int(handler.rfile.readline().strip() or b"0", 16):
        body += handler.rfile.read(size)
        handler.rfile.readline()
    handler.rfile.readline()
    return body
