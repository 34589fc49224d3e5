"""One server over HTTP (httpx): JSON calls and server-sent events, failures as one-line facts.

``Unreachable`` (connection refused or dropped, time-out, 5xx, a reply that is not what the API
returns) may succeed on another server; ``Rejected`` is this request's own fault (HTTP 400: e.g. the
prompt does not fit) and would fail anywhere; any other ``ServerError`` (a refused API key) ends the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from ...errors import ServerError

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 600.0
"""Seconds a reply may take to start (a long generation on a busy server); streams wait per event."""


class Unreachable(ServerError):
    """The server did not answer usably; another server may."""


class Rejected(ServerError):
    """The server refused this request (HTTP 400); another server would too."""


class Server:
    """One base URL with its own connection pool; safe to share between threads."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers,
                                    timeout=httpx.Timeout(timeout or DEFAULT_TIMEOUT, connect=CONNECT_TIMEOUT),
                                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def get(self, path: str, *, missing_ok: bool = False) -> Any:
        """GET ``path`` as JSON; None for a 404 when ``missing_ok``."""
        return self._call("GET", path, None, missing_ok)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body, False)

    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each server-sent ``data:`` event as JSON until ``[DONE]`` or the end.
        Closing the iterator closes the connection, which makes llama-server and vLLM stop generating."""
        try:
            with self._client.stream("POST", path, json=body) as reply:
                if reply.status_code != 200:
                    reply.read()
                    self._check(reply, path)
                for line in reply.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = self._json(data, path)
                    if isinstance(event, dict) and "error" in event:
                        raise Unreachable(f"{self.url}{path} failed mid-stream: {_message(event)}")
                    yield event
        except httpx.HTTPError as exc:
            raise self._transport(exc, path) from None

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None, missing_ok: bool) -> Any:
        try:
            reply = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._transport(exc, path) from None
        if reply.status_code == 404 and missing_ok:
            return None
        self._check(reply, path)
        return self._json(reply.text, path)

    def _check(self, reply: httpx.Response, path: str) -> None:
        code = reply.status_code
        if code == 200:
            return
        try:
            detail = _message(json.loads(reply.text))
        except ValueError:
            detail = reply.text.strip().replace("\n", " ")[:200] or reply.reason_phrase
        where = f"{self.url}{path}"
        if code in (401, 403):
            raise ServerError(f"{where} refused the API key (HTTP {code}: {detail})")
        if code == 400:
            raise Rejected(f"{where} rejected the request (HTTP 400: {detail})")
        raise Unreachable(f"{where} answered HTTP {code}: {detail}")

    def _json(self, text: str, path: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            shown = text.strip().replace("\n", " ")[:80]
            raise Unreachable(f"{self.url}{path} sent a reply that is not JSON: {shown!r}") from None

    def _transport(self, exc: httpx.HTTPError, path: str) -> Unreachable:
        if isinstance(exc, httpx.ConnectError):
            return Unreachable(f"cannot reach {self.url}: connection refused or host unknown ({exc})")
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(f"{self.url}{path} timed out ({type(exc).__name__})")
        return Unreachable(f"{self.url}{path} dropped the connection ({type(exc).__name__}: {exc})")


def _message(body: Any) -> str:
    """The error text of an OpenAI-style or llama-server error body, else the body itself (short)."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error).replace("\n", " ")[:300]
