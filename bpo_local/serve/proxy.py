"""The upstream: an OpenAI-compatible server (OpenAI, Ollama, llama-server, vLLM) that answers the
rewritten request. Its base URL (``…/v1``) is fixed by the operator; clients never choose it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..backends.remote.http import transport_error
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable

_DROPPED_REQUEST_HEADERS = frozenset({
    "host", "content-length", "authorization", "accept-encoding", "connection", "keep-alive", "transfer-encoding",
    "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection", "cookie", "x-bpo-mode",
    "x-bpo-turns",
})
"""Client headers not forwarded: hop-by-hop ones, what httpx sets itself, our credentials and our own."""

_DROPPED_RESPONSE_HEADERS = frozenset({
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server",
    "set-cookie",
})


@dataclass
class UpstreamReply:
    """A successful upstream answer: status, the headers to pass on, and the body as a stream."""

    status: int
    headers: dict[str, str]
    response: httpx.Response

    async def body(self) -> bytes:
        try:
            return await self.response.aread()
        finally:
            await self.response.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body chunk by chunk as the upstream sends it (an upstream that dies mid-stream ends it)."""
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TransportError:
            return
        finally:
            await self.response.aclose()


class Upstream:
    """An httpx client for one upstream base URL, with timeouts and the operator's key (if any)."""

    def __init__(self, base_url: str, *, key: str | None, pass_client_key: bool, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._pass_client_key = pass_client_key
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def send(self, method: str, path: str, client_headers: Mapping[str, str], json: Any = None,
                   content: bytes | None = None) -> UpstreamReply:
        """Send ``json`` (or the raw ``content``) to ``base_url + path``; raises UpstreamError (its status),
        UpstreamUnreachable or UpstreamTimeout."""
        url = self.base_url + path
        request = self._client.build_request(method, url, json=json, content=content,
                                             headers=self._headers(client_headers))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, f"upstream {url}", UpstreamUnreachable, UpstreamTimeout) from None
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED_RESPONSE_HEADERS}
        if response.status_code >= 400:
            try:
                body = await response.aread()
            except httpx.TransportError:
                body = b""
            finally:
                await response.aclose()
            raise UpstreamError(response.status_code, body, response.headers.get("content-type", "application/json"))
        return UpstreamReply(response.status_code, headers, response)

    def _headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {k: v for k, v in client_headers.items() if k.lower() not in _DROPPED_REQUEST_HEADERS}
        headers["accept-encoding"] = "identity"
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        elif self._pass_client_key and "authorization" in client_headers:
            headers["authorization"] = client_headers["authorization"]
        return headers

    async def aclose(self) -> None:
        await self._client.aclose()
