"""A failure to answer as facts an API can render: the status, the message, OpenAI's type and code.

The library's errors carry the facts; this module adds the HTTP status and, where it helps, the advice a
client can act on. Each dialect renders an ``ApiError`` in its own shape (``handlers`` picks which).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import (
    BpoLocalError,
    ContextFull,
    InvalidSetting,
    PromptTooLong,
    QueueFull,
    ServerClosing,
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
