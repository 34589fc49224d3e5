"""A failure to answer as facts an API can render: the status, the message, OpenAI's type and code.

The library's errors carry the facts; this module adds the HTTP status and, where it helps, the advice a
client can act on. Each dialect renders an ``ApiError`` in its own shape (``handlers`` picks which).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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


class ApiError(Exception):
    """A failure to answer with ``status``; ``type`` and ``code`` are OpenAI's names for it."""

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


def as_api_error(err: ApiError | BpoLocalError | UpstreamError) -> ApiError:
    """Any failure to answer as an ``ApiError``."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, UpstreamError):
        return upstream_api_error(err)
    return from_library(err)


def upstream_api_error(err: UpstreamError) -> ApiError:
    """An upstream's error in the client's API's shape (its status kept), where the client speaks another API."""
    return ApiError(err.status, f"upstream answered HTTP {err.status}: {error_text(err.body)}", "upstream_error",
                    "upstream_error")


def failed_midway(error: Any) -> ApiError:
    """An upstream's own error event in the middle of its stream (OpenAI's, Anthropic's or the Responses API's
    error object) as the error that ends the client's stream."""
    message = _message(error) or "no message"
    code = error.get("code") if isinstance(error, dict) else None
    return ApiError(502, f"upstream failed midway: {message}", "upstream_error",
                    code if isinstance(code, str) and code else "upstream_error")


def ended_early() -> ApiError:
    """An upstream's stream that ended (its connection closed in good order) before its API's last event."""
    return ApiError(502, "upstream's stream ended before its answer did", "upstream_error", "upstream_cut")


def error_text(body: bytes) -> str:
    """The message of an upstream's error body (OpenAI's, Ollama's or Anthropic's shape), else its first line."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    text = _message(error)
    if text is None:
        text = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else "no message"
    return text[:300]


def _message(error: Any) -> str | None:
    """The message of an error object (or an error that is only a string, as Ollama's)."""
    text = error.get("message") if isinstance(error, dict) else error
    return text if isinstance(text, str) else None
