"""Key access: with a key set, every route but ``/health`` needs it, as ``Authorization: Bearer <key>``
(OpenAI's clients, Ollama's) or ``x-api-key: <key>`` (Anthropic's)."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError
from .handlers import render
from .parse import client_key

OPEN_PATHS = frozenset({"/health"})


class KeyAuth:
    """ASGI middleware: a request without the key gets 401 in its API's error shape (compared in constant
    time; never logged)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        err = ApiError(401, "missing or wrong API key: send Authorization: Bearer <key> or x-api-key: <key>",
                       "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        await render(err, scope["path"])(scope, receive, send)

    def _allowed(self, headers: Headers) -> bool:
        given = client_key(headers)
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._key)
