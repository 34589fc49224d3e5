"""A server that pushes back (HTTP 429, 503; a gateway's 502, 504): how long to wait, and how much to send.

``wait_hint`` reads what the server says: ``Retry-After`` (seconds or an HTTP date), else OpenAI's
``x-ratelimit-reset-requests`` / ``-tokens`` (``1s``, ``6m0s``, ``20ms``; the longer of the two).
``backoff`` turns that, or nothing, into the next wait: the server's word (never earlier, plus up to a
quarter more so clients told the same moment do not return together), else exponential from 1 s with
full jitter, capped. ``Window`` is one server's share of the requests in flight: halved while it pushes
back, grown again by one per window of successes (AIMD, as TCP does), never above the caller's limit.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
HINT_MAX = 300.0
"""The longest wait a server's hint is taken for (a longer one is a misconfiguration, not a plan)."""
PUSHBACK_STATUSES = frozenset({429, 502, 503, 504})

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def wait_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks to be left alone, from its headers; None when it says nothing usable."""
    told = headers.get("retry-after")
    if told is not None:
        seconds = _retry_after(told.strip())
        if seconds is not None:
            return min(seconds, HINT_MAX)
    resets = [s for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
              if (s := _duration(headers.get(name, ""))) is not None]
    return min(max(resets), HINT_MAX) if resets else None


def _retry_after(text: str) -> float | None:
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(text).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _duration(text: str) -> float | None:
    """``6m0s``, ``1.5s``, ``20ms`` or plain seconds as seconds; None if it is none of these."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(a + u for a, u in parts) != text:
        return None
    return sum(float(amount) * _UNIT[unit] for amount, unit in parts)


def backoff(attempt: int, hint: float | None) -> float:
    """The wait before try ``attempt + 1`` after ``attempt`` pushbacks (1, 2, ...)."""
    if hint is not None:
        return hint * random.uniform(1.0, 1.25)
    return random.uniform(0.0, min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)))


class Window:
    """How many requests one server may have in flight now, and until when it asked for quiet.

    ``enter()`` blocks while the window is full or the server's quiet lasts; ``leave(pushed_back=...)``
    after each request: a pushback halves the window (not below 1) and starts ``quiet`` seconds without new
    requests; a success grows it by one per window's worth of successes, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = limit
        self._inside = 0
        self._successes = 0
        self._quiet_until = 0.0
        self._lock = threading.Condition()

    def enter(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                if now < self._quiet_until:
                    self._lock.wait(self._quiet_until - now)
                elif self._inside >= self.size:
                    self._lock.wait()
                else:
                    self._inside += 1
                    return

    def leave(self, *, pushed_back: bool = False, quiet: float = 0.0) -> None:
        with self._lock:
            self._inside -= 1
            if pushed_back:
                self.size = max(1, self.size // 2)
                self._successes = 0
                self._quiet_until = max(self._quiet_until, time.monotonic() + quiet)
            else:
                self._successes += 1
                if self._successes >= self.size and self.size < self.limit:
                    self.size += 1
                    self._successes = 0
            self._lock.notify_all()
