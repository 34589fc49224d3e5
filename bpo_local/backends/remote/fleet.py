"""Many servers, nothing lost: least-outstanding placement, bounded retries with backoff.

A request goes to the server with the fewest sequences outstanding that has room (``limit``
sequences per server; a server with none outstanding always has room). When a server fails with
``ServerUnreachable`` it rests (1 s, doubling to 30 s) and the request is retried on another, up to
``attempts`` times; a request that is rejected (``ServerRejected``, ``PromptTooLong``) or hits another error is
not retried. A streamed request is retried only while it has shown nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ...errors import ServerError, ServerUnreachable

T = TypeVar("T")
E = TypeVar("E")
"""What one server is to the work: a remote backend's ``Endpoint``, a chat target's connection."""
REST_FIRST, REST_MAX = 1.0, 30.0


class Fleet(Generic[E]):
    def __init__(self, endpoints: Sequence[E], *, attempts: int | None = None) -> None:
        self.endpoints = list(endpoints)
        self.attempts = attempts or len(self.endpoints) + 2
        self._lock = threading.Condition()
        self._load = [0] * len(self.endpoints)
        self._rest_until = [0.0] * len(self.endpoints)
        self._rest = [0.0] * len(self.endpoints)

    def acquire(self, need: int, limit: int | None, *, avoid: int | None = None) -> int:
        """Block until a server has room for ``need`` sequences; reserve it and return its number.
        A resting server is used only when every server rests (after waiting out the shortest rest)."""
        with self._lock:
            while True:
                now = time.monotonic()
                ready = [i for i in range(len(self.endpoints)) if self._rest_until[i] <= now]
                if not ready:
                    self._lock.wait(min(self._rest_until) - now)
                    continue
                preferred = [i for i in ready if i != avoid] or ready
                roomy = [i for i in preferred if limit is None or self._load[i] == 0 or self._load[i] + need <= limit]
                if roomy:
                    chosen = min(roomy, key=lambda i: self._load[i])
                    self._load[chosen] += need
                    return chosen
                self._lock.wait(0.5)

    def release(self, index: int, need: int, *, failed: bool) -> None:
        with self._lock:
            self._load[index] -= need
            if failed:
                self._rest[index] = min(max(self._rest[index] * 2, REST_FIRST), REST_MAX)
                self._rest_until[index] = time.monotonic() + self._rest[index]
            else:
                self._rest[index] = 0.0
            self._lock.notify_all()

    def run(self, need: int, limit: int | None, work: Callable[[E], T], *,
            retryable: Callable[[], bool] = lambda: True, first: int | None = None) -> T:
        """``work`` on a server (``first``, already reserved, if given), retried on others while
        ``retryable()``; the last failure's message when every attempt fails."""
        index = first if first is not None else self.acquire(need, limit)
        for attempt in range(1, self.attempts + 1):
            try:
                result = work(self.endpoints[index])
            except ServerUnreachable as exc:
                self.release(index, need, failed=True)
                if attempt == self.attempts or not retryable():
                    raise ServerError(f"{exc} (after {attempt} attempt(s) on {len(self.endpoints)} server(s))") from None
                index = self.acquire(need, limit, avoid=index)
                continue
            except BaseException:
                self.release(index, need, failed=False)
                raise
            self.release(index, need, failed=False)
            return result
        raise AssertionError("unreachable")  # pragma: no cover
