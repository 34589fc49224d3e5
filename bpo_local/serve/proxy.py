"""The upstream: the LLM server that answers the rewritten request (OpenAI, Anthropic, Ollama, llama-server,
vLLM). Its base URL (``…/v1``) is fixed by the operator; clients never choose it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..backends.remote.http import transport_error
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from .parse import client_key

_logger = logging.getLogger(__name__)

_DROPPED_REQUEST_HEADERS = frozenset({
    "host", "content-length", "authorization", "x-api-key", "accept-encoding", "connection", "keep-alive",
    "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection", "cookie",
    "x-bpo-mode", "x-bpo-turns", "x-bpo-show-rewrite", "x-bpo-task",
})
"""Client headers not forwarded: hop-by-hop ones, what httpx sets itself, credentials (set again below) and
our own."""

_DROPPED_RESPONSE_HEADERS = frozenset({
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server",
    "set-cookie",
})
_NO_SUCH_ROUTE = (404, 405)
_HAS_THE_ROUTE = (200, 400, 422, 500)
"""An empty body refused as a bad request (llama-server says 500 for Messages) means the route exists."""
_CHECK_SECONDS = 3.0
"""How long the start-up check waits for the upstream's model list."""


@dataclass
class UpstreamReply:
    """A successful upstream answer: status, the headers to pass on, and the body as a stream."""

    status: int
    headers: dict[str, str]
    response: httpx.Response

    async def body(self) -> bytes:
        """The whole body; UpstreamUnreachable or UpstreamTimeout where the upstream fails before its end."""
        try:
            return await self.response.aread()
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            await self.response.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body chunk by chunk as the upstream sends it; UpstreamUnreachable or UpstreamTimeout where the
        upstream dies or stalls mid-stream (never a quiet end that would pass for a whole answer)."""
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            await self.response.aclose()

    async def aclose(self) -> None:
        """Close the connection (again, harmlessly, where reading the body already did)."""
        await self.response.aclose()

    def _broken(self, exc: httpx.TransportError) -> UpstreamUnreachable | UpstreamTimeout:
        return transport_error(exc, f"upstream {self.response.request.url}", UpstreamUnreachable, UpstreamTimeout)


class Upstream:
    """An httpx client for one upstream base URL, with timeouts, the operator's key (if any), and what the
    upstream was found to serve."""

    def __init__(self, base_url: str, *, key: str | None, pass_client_key: bool, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._pass_client_key = pass_client_key
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self._serves: dict[str, bool] = {}
        self._probing: dict[str, asyncio.Lock] = {}

    @property
    def root_url(self) -> str:
        """The server's root, where Ollama's own API lives (the base URL without its ``/v1``)."""
        return self.base_url.removesuffix("/v1")

    async def send(self, method: str, path: str, client_headers: Mapping[str, str], json: Any = None,
                   content: bytes | None = None, key_header: str = "authorization",
                   at_root: bool = False, timeout: float | None = None) -> UpstreamReply:
        """Send ``json`` (or the raw ``content``) to ``base_url + path`` (``root_url + path`` if ``at_root``),
        the key under ``key_header``; raises UpstreamError (its status), UpstreamUnreachable or UpstreamTimeout."""
        url = (self.root_url if at_root else self.base_url) + path
        request = self._client.build_request(method, url, json=json, content=content,
                                             headers=self._headers(client_headers, key_header),
                                             **({"timeout": timeout} if timeout else {}))
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

    async def serves(self, path: str, client_headers: Mapping[str, str], key_header: str) -> bool:
        """Whether the upstream has the route ``path``: asked once (an empty body, which a server with the
        route refuses as a bad request and one without it as no such route), then remembered."""
        if path not in self._serves:
            async with self._probing.setdefault(path, asyncio.Lock()):
                if path not in self._serves:
                    try:
                        await (await self.send("POST", path, client_headers, {}, key_header=key_header)).body()
                        status = 200
                    except UpstreamError as err:
                        status = err.status
                    if status in _NO_SUCH_ROUTE:
                        _logger.warning("upstream %s has no %s: requests for it go as chat completions",
                                        self.base_url, path)
                    if status in _NO_SUCH_ROUTE or status in _HAS_THE_ROUTE:
                        self._serves[path] = status not in _NO_SUCH_ROUTE
        return self._serves.get(path, True)  # an answer that says neither (401, 429, 5xx): asked again next time

    async def check(self) -> None:
        """Say at once (a warning) when the upstream does not answer: serving goes on, as it may come up later."""
        try:
            await (await self.send("GET", "/models", {}, timeout=_CHECK_SECONDS)).body()
        except (UpstreamUnreachable, UpstreamTimeout) as err:
            _logger.warning("%s; serving anyway: chat requests fail with 502 until it answers", err)
        except UpstreamError as err:
            if err.status in (401, 403) and not self._key:
                return  # it wants the clients' own keys
            _logger.warning("upstream %s answered GET /models with HTTP %s; serving anyway", self.base_url, err.status)

    def _headers(self, client_headers: Mapping[str, str], key_header: str) -> dict[str, str]:
        headers = {k: v for k, v in client_headers.items() if k.lower() not in _DROPPED_REQUEST_HEADERS}
        headers["accept-encoding"] = "identity"
        if self._key:
            headers[key_header] = f"Bearer {self._key}" if key_header == "authorization" else self._key
        elif self._pass_client_key and "authorization" in client_headers:
            headers["authorization"] = client_headers["authorization"]  # as sent: a key, or an OAuth token
        elif self._pass_client_key and (key := client_key(client_headers)):
            headers[key_header] = f"Bearer {key}" if key_header == "authorization" else key
        return headers

    async def aclose(self) -> None:
        await self._client.aclose()
