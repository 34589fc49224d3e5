"""How long to wait when a server pushes back, and how many requests to send it meanwhile (no server needed:
the rules themselves; test_eval_concurrent.py has a real relay answering 429)."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import pytest

from bpo_local.backends.remote.pushback import BACKOFF_MAX, HINT_MAX, Window, backoff, wait_hint


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0"}, 0.0),
    ({"retry-after": "1000000"}, HINT_MAX),
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "2m0s"}, 120.0),
    ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
    ({"x-ratelimit-reset-requests": "1.5s"}, 1.5),
    ({"retry-after": "soon"}, None),
    ({"x-ratelimit-reset-requests": "in a while"}, None),
    ({}, None),
])
def test_the_servers_word_on_waiting(headers: dict[str, str], seconds: float | None) -> None:
    assert wait_hint(headers) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_as_an_http_date() -> None:
    assert wait_hint({"retry-after": formatdate(time.time() + 30, usegmt=True)}) == pytest.approx(30, abs=1.5)


def test_backoff_never_comes_back_before_the_server_said_and_is_bounded_without_a_word() -> None:
    assert all(5.0 <= backoff(attempt, 5.0) <= 6.25 for attempt in range(1, 20))
    waits = [backoff(attempt, None) for attempt in range(1, 40)]
    assert all(0 <= w <= BACKOFF_MAX for w in waits)
    assert max(backoff(1, None) for _ in range(200)) <= 1.0  # the first is within a second


def test_the_window_halves_on_pushback_and_grows_back_to_its_limit() -> None:
    window = Window(8)
    window.enter()
    window.leave(pushed_back=True)
    assert window.size == 4
    for _ in range(2):
        window.enter()
        window.leave(pushed_back=True)
    assert window.size == 1
    for _ in range(1 + 2 + 3 + 4 + 5 + 6 + 7):  # one more per window's worth of successes
        window.enter()
        window.leave()
    assert window.size == 8


def test_a_full_window_and_a_quiet_server_make_requests_wait() -> None:
    window = Window(1)
    window.enter()
    entered = threading.Event()
    thread = threading.Thread(target=lambda: (window.enter(), entered.set()))
    thread.start()
    assert not entered.wait(0.2)  # the window holds one request
    start = time.monotonic()
    window.leave(pushed_back=True, quiet=0.5)
    assert entered.wait(5) and time.monotonic() - start >= 0.45  # and the server asked for half a second
    thread.join()
