"""Streams already answering (their 200 long sent): an upstream's stream ended early at the server's close,
and a failure midway ended in the API's own error event, which the client's SDK raises, never a quiet end
that would pass for a whole answer. For pieces BPO renders, and for an upstream's bytes passed on as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from .. import sse
from ..errors import BpoLocalError, ServerClosing, UpstreamError
from .answer import Failed, Piece
from .errors import ApiError, as_api_error
from .proxy import UpstreamReply

_logger = logging.getLogger(__name__)


async def until_closing(reply: UpstreamReply, closing: asyncio.Event) -> AsyncIterator[bytes]:
    """An upstream's stream, cut (ServerClosing raised) when the server's grace ends; the upstream's connection is
    closed however it ends, even before a first read."""
    chunks = reply.chunks()
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
        await chunks.aclose()
        await reply.aclose()  # where the read never began, ``chunks`` had nothing to close


async def ending_in_errors(pieces: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    """``pieces``, where a failure after the stream began ends it as ``Failed`` (the text shown so far stays
    as it was)."""
    try:
        async for piece in pieces:
            yield piece
    except (ApiError, BpoLocalError, UpstreamError) as err:
        yield Failed(_failed(err))


def passed_on(chunks: AsyncIterator[bytes], content_type: str,
              failed_event: Callable[[ApiError], bytes]) -> AsyncIterator[bytes]:
    """An upstream's body passed on as it came. An event stream goes a whole event at a time, so that where the
    upstream fails midway its unfinished event is dropped and ``failed_event`` ends the stream in its API's words;
    any other body goes chunk by chunk, and a failure leaves it unfinished (JSON its reader cannot parse)."""
    if content_type.startswith(sse.MEDIA_TYPE):
        return _whole_events(chunks, failed_event)
    return _as_it_comes(chunks)


async def _whole_events(chunks: AsyncIterator[bytes],
                        failed_event: Callable[[ApiError], bytes]) -> AsyncIterator[bytes]:
    held = b""
    try:
        async for chunk in chunks:
            held += chunk
            cut = max((m.end() for m in sse.EVENT_END.finditer(held)), default=0)
            if cut:
                yield held[:cut]
                held = held[cut:]
    except BpoLocalError as err:  # the upstream died or stalled, or the server's grace ended
        yield failed_event(_failed(err))
        return
    if held:
        yield held


async def _as_it_comes(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except BpoLocalError as err:
        _failed(err)  # said in the log; the body stays unfinished


def _failed(err: ApiError | BpoLocalError | UpstreamError) -> ApiError:
    """``err`` as the error a stream ends in, said in the server's log (its status line said 200)."""
    failed = as_api_error(err)
    _logger.warning("a stream already answering failed: %s", failed.message)
    return failed
