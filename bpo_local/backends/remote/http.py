"""One server over HTTP (httpx): JSON calls and server-sent events, failures as one-line facts.

``ServerUnreachable`` (connection refused or dropped, time-out, 5xx, a reply that is not what the API
returns) may succeed on another server; ``ServerRejected`` is this request's own fault (HTTP 400: e.g. the
prompt does not fit) and would fail anywhere; ``ServerAuth`` (a refused API key) ends the run.

``transport_error`` is the package's one reading of httpx's failures: remote backends, targets and
``serve``'s proxy all turn an ``httpx.HTTPError`` into their error class through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from ... import sse
from ...errors import ServerAuth, ServerRejected, ServerUnreachable

E = TypeVar("E", bound=Exception)

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 600.0
"""Seconds a reply may take to start (a long generation on a busy server); streams wait per event."""


def transport_error(exc: httpx.HTTPError, where: str, unreachable: Callable[[str], E],
                    timed_out: Callable[[str], E] | None = None) -> E:
    """``exc`` (httpx failed to talk to ``where``) as one-line facts in the caller's error class
    (``timed_out`` for a time-out, when the caller tells those apart)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return (timed_out or unreachable)(f"{where} did not answer in time ({name})")
    if isinstance(exc, httpx.ConnectError):
        return unreachable(f"cannot reach {where}: connection refused or host unknown ({exc or name})")
    return unreachable(f"{where} dropped the connection ({name}{': ' + str(exc) if str(exc) else ''})")


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
                for sent in sse.events(reply.iter_bytes()):
                    if sent.data == sse.DONE:
                        return
                    if not sent.data:
                        continue
                    event = self._json(sent.data, path)
                    if isinstance(event, dict) and "error" in event:
                        raise ServerUnreachable(f"{self.url}{path} failed mid-stream: {_message(event)}")
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
            raise ServerAuth(where, code, detail)
        if code == 400:
            raise ServerRejected(f"{where} rejected the request (HTTP 400: {detail})")
        raise ServerUnreachable(f"{where} answered HTTP {code}: {detail}")

    def _json(self, text: str, path: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            shown = text.strip().replace("\n", " ")[:80]
            raise ServerUnreachable(f"{self.url}{path} sent a reply that is not JSON: {shown!r}") from None

    def _transport(self, exc: httpx.HTTPError, path: str) -> ServerUnreachable:
        return transport_error(exc, self.url + path, ServerUnreachable)


def _message(body: Any) -> str:
    """The error text of an OpenAI-style or llama-server error body, else the body itself (short)."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error).replace("\n", " ")[:300]
