"""Bearer-key access: with a key set, every route but ``/health`` needs ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError, render

OPEN_PATHS = frozenset({"/health"})


class BearerAuth:
    """ASGI middleware: a request without the key gets 401 (compared in constant time; never logged)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        response = render(ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                   "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"}))
        await response(scope, receive, send)

    def _allowed(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), self._key)
