"""Starlette's exception handlers: the one place an exception becomes a response, in the shape of the API
the request was made in (``dialects.for_path``)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BpoLocalError, UpstreamError
from .dialects import for_path
from .errors import ApiError, ClientGone, from_library

_logger = logging.getLogger(__name__)


def render(err: ApiError, path: str) -> JSONResponse:
    """``err`` in the error shape of the API that owns ``path``."""
    return JSONResponse(for_path(path).error_body(err), status_code=err.status, headers=err.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render(exc, request.url.path)


async def _library_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BpoLocalError)
    return render(from_library(exc), request.url.path)


async def _upstream_error(request: Request, exc: Exception) -> Response:
    """The upstream's own error, status and body as it sent them (it speaks the client's API)."""
    assert isinstance(exc, UpstreamError)
    return Response(exc.body, status_code=exc.status, media_type=exc.content_type)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        return render(ApiError(404, f"no route {request.method} {path}", "invalid_request_error", "not_found"), path)
    if exc.status_code == 405:
        return render(ApiError(405, f"{path} does not take {request.method}", "invalid_request_error",
                               "method_not_allowed", dict(exc.headers or {})), path)
    return render(ApiError(exc.status_code, str(exc.detail), "invalid_request_error"), path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    _logger.error("unexpected failure on %s %s", request.method, request.url.path, exc_info=exc)
    return render(ApiError(500, f"internal error: {type(exc).__name__}", "server_error"), request.url.path)


HANDLERS = {
    ApiError: _api_error,
    BpoLocalError: _library_error,
    UpstreamError: _upstream_error,
    ClientGone: _client_gone,
    HTTPException: _http_error,
    Exception: _unexpected,
}
"""Starlette ``exception_handlers``."""
