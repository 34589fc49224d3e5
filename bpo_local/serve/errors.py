"""Every failure becomes an OpenAI-style error body, here and nowhere else.

``{"error": {"message", "type", "code"}}`` with the status that fits: the library's errors carry the
facts, this module adds the HTTP status and, where it helps, the advice a client can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    BpoLocalError,
    ContextFull,
    InvalidSetting,
    PromptTooLong,
    QueueFull,
    ServerClosing,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    UsageError,
)

RETRY_AFTER_SECONDS = 1

_logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure to answer with ``status`` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}


class ClientGone(Exception):
    """The client closed the connection before its answer was ready: nothing is left to answer."""


def error_body(message: str, type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code}}


Advice = Callable[[Any], str]
ADVICE: tuple[tuple[type[BpoLocalError], int, str, str | None, Advice | None], ...] = (
    (QueueFull, 429, "rate_limit_error", "queue_full", lambda e: f"retry in {RETRY_AFTER_SECONDS} s"),
    (UpstreamUnreachable, 502, "upstream_error", "upstream_unreachable", None),
    (UpstreamTimeout, 504, "upstream_error", "upstream_timeout", None),
    (ServerClosing, 503, "server_error", "shutting_down", None),
    (PromptTooLong, 400, "invalid_request_error", "context_length_exceeded",
     lambda e: f"shorten the prompt to under {e.n_ctx} tokens"),
    (ContextFull, 500, "server_error", "context_full", lambda e: "ask for fewer max_tokens or candidates (n)"),
    (InvalidSetting, 400, "invalid_request_error", "invalid_value", lambda e: f"send {e.name} >= {e.minimum}"),
    (UsageError, 400, "invalid_request_error", "invalid_value", None),
)
"""Library error -> status, type, code and what the client can change; the first class that matches wins."""


def from_library(err: BpoLocalError) -> ApiError:
    """The status and body for a library error: its facts, then the advice a client can act on."""
    for cls, status, kind, code, advice in ADVICE:
        if isinstance(err, cls):
            message = f"{err}; {advice(err)}" if advice else str(err)
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None
            return ApiError(status, message, kind, code, headers)
    return ApiError(500, str(err), "server_error")


def render(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.code), status_code=err.status, headers=err.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    return render(exc)  # type: ignore[arg-type]


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    return render(from_library(exc))  # type: ignore[arg-type]


async def _upstream_error(request: Request, exc: Exception) -> Response:
    """The upstream's own error, status and body as it sent them."""
    assert isinstance(exc, UpstreamError)
    return Response(exc.body, status_code=exc.status, media_type=exc.content_type)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return render(ApiError(404, f"no route {request.method} {request.url.path}", "invalid_request_error",
                               "not_found"))
    if exc.status_code == 405:
        return render(ApiError(405, f"{request.url.path} does not take {request.method}", "invalid_request_error",
                               "method_not_allowed", dict(exc.headers or {})))
    return render(ApiError(exc.status_code, str(exc.detail), "invalid_request_error"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _logger.error("unexpected failure on %s %s", request.method, request.url.path, exc_info=exc)
    return render(ApiError(500, f"internal error: {type(exc).__name__}", "server_error"))


HANDLERS = {
    ApiError: _api_error,
    BpoLocalError: _library_error,
    UpstreamError: _upstream_error,
    ClientGone: _client_gone,
    HTTPException: _http_error,
    Exception: _unexpected,
}
"""Starlette ``exception_handlers``: the one place an exception becomes a response."""
