"""Streams already answering (their 200 long sent): an upstream's stream ended early at the server's close,
and a failure midway ended in the API's own error event, which the client's SDK raises, never a quiet end
that would pass for a whole answer. For pieces BPO renders, and for an upstream's bytes passed on as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable

from ..errors import BpoLocalError, ServerClosing, UpstreamError
from .answer import Failed, Piece
from .errors import ApiError, as_api_error

_logger = logging.getLogger(__name__)


async def until_closing(chunks: AsyncIterator[bytes], closing: asyncio.Event) -> AsyncIterator[bytes]:
    """An upstream's stream, cut (the upstream's connection closed, ServerClosing raised) when the server's
    grace ends."""
    ended = asyncio.ensure_future(closing.wait())
    following: asyncio.Future[bytes] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(chunks))
            await asyncio.wait({following, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                raise ServerClosing("the server is shutting down")
            try:
                chunk = following.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        ended.cancel()
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        await chunks.aclose()  # type: ignore[attr-defined]


async def ending_in_errors(pieces: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    """``pieces``, where a failure after the stream began ends it as ``Failed`` (the text shown so far stays
    as it was)."""
    try:
        async for piece in pieces:
            yield piece
    except (ApiError, BpoLocalError, UpstreamError) as err:
        yield Failed(_failed(err))


async def whole_events(chunks: AsyncIterator[bytes], boundary: re.Pattern[bytes] | None,
                       failed_event: Callable[[ApiError], bytes] | None) -> AsyncIterator[bytes]:
    """An upstream's stream passed on as it came, each chunk up to its last event ``boundary`` (the rest
    with the next): where the upstream fails midway, the bytes of its unfinished event are dropped and
    ``failed_event`` ends the stream in its API's words. Without a ``boundary`` (a body that is no stream of
    events) chunks go as they come and a failure just ends it."""
    held = b""
    try:
        async for chunk in chunks:
            held += chunk
            cut = len(held) if boundary is None else max((m.end() for m in boundary.finditer(held)), default=0)
            if cut:
                yield held[:cut]
                held = held[cut:]
    except BpoLocalError as err:  # the upstream died or stalled, or the server's grace ended
        failed = _failed(err)
        if failed_event is not None:
            yield failed_event(failed)
        return
    if held:
        yield held


def _failed(err: ApiError | BpoLocalError | UpstreamError) -> ApiError:
    """``err`` as the error a stream ends in, said in the server's log (its status line said 200)."""
    failed = as_api_error(err)
    _logger.warning("a stream already answering failed: %s", failed.message)
    return failed
