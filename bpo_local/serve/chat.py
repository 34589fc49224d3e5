"""The one chat pipeline, whatever API a request came in: the request as a conversation (its dialect); an
app's own task passed on untouched; the proxy's turn rules and rewrite; then the upstream in the request's
own API (or as chat completions where the upstream lacks it), or BPO's own answer when there is no upstream.

    Route("/v1/messages", chat.endpoint(dialects.ANTHROPIC), methods=["POST"])
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import sse
from ..errors import ServerClosing, UpstreamError
from . import apps, bpo_answer, parse, show, streams
from .answer import End, Piece, TextPiece
from .dialects import Conversation, Dialect, Rendering
from .dialects.openai_chat import read_answer, read_stream
from .errors import ApiError, ClientGone, upstream_api_error
from .owner import NORMAL, PERSON
from .proxy import UpstreamReply
from .rewrite import APP_TASK, FAILED, REMEMBERED, REWRITTEN, Rewrite
from .state import State, state_of
from .turns import may_rewrite

T = TypeVar("T")
LAST_WORDS_SECONDS = 2.0
"""Once the grace is over, how long work that is ending anyway (a cancelled generation) has to answer."""
CHAT_PATH = "/chat/completions"
"""Where an upstream answers requests translated from an API it does not speak."""


@dataclass(frozen=True)
class ChatCall:
    """One chat request, parsed once: its dialect, its body as sent (and its bytes, forwarded as they are where
    nothing changed), the conversation as BPO sees it (each person's message without the texts an app put around
    it, kept in ``app_texts`` by turn index), the preset (``mode``) and turn rule the proxy applies, and whether
    the answer shows the rewrite."""

    dialect: Dialect
    body: dict[str, Any]
    raw: bytes
    conversation: Conversation
    app_texts: Mapping[int, tuple[str, str]]
    mode: str
    rule: str
    show: bool
    rendering: Rendering


def endpoint(dialect: Dialect) -> Callable[[Request], Awaitable[Response]]:
    """The route for ``dialect``'s chat requests."""

    async def chat(request: Request) -> Response:
        state = state_of(request)
        raw = await parse.raw_body(request, state.settings.max_body_bytes)
        return await answer(request, state, parsed(request, state, dialect, raw))

    return chat


def parsed(request: Request, state: State, dialect: Dialect, raw: bytes,
           body: dict[str, Any] | None = None) -> ChatCall:
    body = parse.json_object(raw) if body is None else body
    conversation = dialect.conversation(body)
    turns, app_texts = apps.persons_turns(conversation.turns)
    conversation = replace(conversation, turns=turns)
    mode = parse.header_mode(request, state.settings.mode or "", state.owner.optimizer.preset_names())
    rule = parse.header_turns(request, state.settings.turns)
    shown = parse.header_show(request, state.settings.show_rewrite)
    model = state.owner.optimizer.info.name if state.upstream is None else str(conversation.model or "")
    return ChatCall(dialect, body, raw, conversation, app_texts, mode, rule, shown, Rendering(model))


async def answer(request: Request, state: State, call: ChatCall) -> Response:
    if state.upstream is None:
        return await bpo_answers(request, state, call)
    task = apps.recognise(request.headers, call.conversation.turns)
    if task is not None and state.settings.tasks == "pass":
        done = Rewrite(call.mode, call.conversation.last_user_text(required=False), turn=APP_TASK, reason=task)
        return await _forward(request, state, call, call.body, done)
    priority = NORMAL if task is not None else PERSON
    if call.show and call.conversation.stream and may_rewrite(call.conversation.turns, call.mode, call.rule,
                                                              call.conversation.continues):
        return _shown_stream(state, call, priority, request.headers)
    forwarded, done = await until_disconnect(request, rewritten(state, call, priority=priority))
    return await _forward(request, state, call, forwarded, done)


async def rewritten(state: State, call: ChatCall, watch: asyncio.Queue[str] | None = None,
                    priority: int = PERSON) -> tuple[dict[str, Any], Rewrite]:
    """The body as it goes upstream (the turn rules applied, earlier answers without BPO's block), and what
    was done."""
    assert state.rewriter is not None
    conversation = call.conversation
    texts, done = await state.rewriter.conversation(conversation.turns, call.mode, call.rule, conversation.model,
                                                    conversation.continues, watch, priority)
    texts = {i: _around(call, i, text) for i, text in texts.items()}
    kept = {i: (len(before), len(after)) for i, (before, after) in call.app_texts.items()}
    body = call.dialect.edit_assistant_texts(call.dialect.with_texts(call.body, texts, kept), show.strip)
    return body, done


def _around(call: ChatCall, index: int, text: str) -> str:
    """``text`` with the apps' own texts that stood around the person's message at ``index`` back in place."""
    before, after = call.app_texts.get(index, ("", ""))
    return before + text + after


async def bpo_answers(request: Request, state: State, call: ChatCall) -> Response:
    """BPO as the model: the last user turn's rewrite is the answer, whole or streamed."""
    text = call.conversation.last_user_text()
    settings = call.dialect.to_chat(call.body)
    if call.dialect.caps_max_tokens and isinstance(settings.get("max_tokens"), int):
        settings["max_tokens"] = min(settings["max_tokens"], state.settings.max_tokens)  # a budget, not a demand
    how = optimization_for(state, settings)
    ticket = state.owner.submit(text, mode=how.mode, seed=how.seed, overrides=how.overrides)
    if not call.conversation.stream:
        result = await until_disconnect(request, ticket.result())
        return JSONResponse(call.dialect.answer(bpo_answer.answer(result, call.rendering.model), call.rendering))
    await until_disconnect(request, ticket.started())  # an error before the first token still gets its status
    pieces = streams.ending_in_errors(bpo_answer.pieces(ticket))
    return StreamingResponse(call.dialect.stream(pieces, call.rendering, {}), media_type=call.dialect.media_type)


def optimization_for(state: State, body: dict[str, Any]) -> parse.Optimization:
    """The body's preset and settings, with this server's defaults and limits and the presets it knows."""
    return parse.optimization(body, state.settings.mode or "", state.settings.seed, max_n=state.settings.max_n,
                              presets=state.owner.optimizer.preset_names())


async def _forward(request: Request, state: State, call: ChatCall, forwarded: dict[str, Any],
                   done: Rewrite) -> Response:
    """``forwarded`` to the upstream, in the request's API where the upstream speaks it, else as chat
    completions; the answer back in the request's API with the ``bpo`` record (and the rewrite's block first
    where it is shown)."""
    native = await until_disconnect(request, _speaks(state, call.dialect, request.headers))
    reply = await until_disconnect(request, _send(state, call, forwarded, native, request.headers))
    prefix = _block(done) if call.show else ""
    record = done.record(*_route(call.dialect, native))
    headers = {**(reply.headers if native else {}), **done.headers()}
    if call.conversation.stream:
        chunks = streams.until_closing(reply, state.closing)
        if native:
            body = streams.passed_on(chunks, reply.headers.get("content-type", ""),
                                     lambda failed: call.dialect.failed_event(failed, call.rendering))
            return StreamingResponse(sse.with_first_json(body, lambda first: first.update(bpo=record)),
                                     status_code=reply.status, headers=headers)
        pieces = streams.ending_in_errors(read_stream(chunks))
        return StreamingResponse(call.dialect.stream(pieces, call.rendering, {"bpo": record}),
                                 media_type=call.dialect.media_type, headers=headers)
    data = await reply.body()
    if not native:
        whole = read_answer(json_object(data, "chat completion"), {"bpo": record})
        whole = replace(whole, text=prefix + whole.text) if prefix else whole
        return JSONResponse(call.dialect.answer(whole, call.rendering), headers=headers)
    try:
        answered = json.loads(data)
    except ValueError:
        return Response(data, status_code=reply.status, headers=headers)
    if isinstance(answered, dict):
        answered = call.dialect.with_prefix(answered, prefix) if prefix else answered
        answered["bpo"] = record
    return JSONResponse(answered, status_code=reply.status, headers=headers)


def _shown_stream(state: State, call: ChatCall, priority: int, headers: Mapping[str, str]) -> StreamingResponse:
    """A stream whose answer opens with BPO's block, filled as the rewrite settles (so the wait shows
    progress), then the upstream's answer; the ``bpo`` record rides on the last event."""

    async def pieces() -> AsyncIterator[Piece]:
        watch: asyncio.Queue[str | None] = asyncio.Queue()
        work = asyncio.ensure_future(_until_closed(state, rewritten(state, call, watch, priority)))  # type: ignore[arg-type]
        work.add_done_callback(lambda _: watch.put_nowait(None))
        try:
            shown = ""
            while (piece := await watch.get()) is not None:
                yield TextPiece(piece if shown else show.OPEN + piece)
                shown += piece
            forwarded, done = work.result()
            rest = _block(done)
            if shown and done.optimized is not None:
                rest = (done.optimized[len(shown):] if done.optimized.startswith(shown)
                        else "\n\n" + done.optimized) + show.CLOSE
            elif shown:
                rest = "\n\n" + show.not_used(done.reason) + show.CLOSE
            if rest:
                yield TextPiece(rest)
            async for piece in _upstream_pieces(state, call, forwarded, done, headers):
                yield piece
        finally:
            work.cancel()

    return StreamingResponse(call.dialect.stream(streams.ending_in_errors(pieces()), call.rendering, {}),
                             media_type=call.dialect.media_type, headers={"X-BPO-Mode": call.mode})


async def _upstream_pieces(state: State, call: ChatCall, forwarded: dict[str, Any], done: Rewrite,
                           headers: Mapping[str, str]) -> AsyncIterator[Piece]:
    native = await _until_closed(state, _speaks(state, call.dialect, headers))
    reply = await _until_closed(state, _send(state, call, forwarded, native, headers))
    read = call.dialect.read_stream if native else read_stream
    async for piece in read(streams.until_closing(reply, state.closing)):
        yield replace(piece, extra={"bpo": done.record(*_route(call.dialect, native))}) \
            if isinstance(piece, End) else piece


def _block(done: Rewrite) -> str:
    """The block that shows what BPO did with the turn: its rewrite, or why none went; none where BPO had
    nothing to do with it (a follow-up, a tool round, off, skipped)."""
    if done.optimized is not None and done.turn in (REWRITTEN, REMEMBERED):
        return show.block(done.optimized)
    return show.block(show.not_used(done.reason)) if done.turn == FAILED else ""


async def _speaks(state: State, dialect: Dialect, headers: Mapping[str, str]) -> bool:
    """Whether the upstream takes ``dialect``'s requests in its own API (asked once per API)."""
    assert state.upstream is not None
    if dialect.native_path is None:
        return False
    return dialect.native_path == CHAT_PATH or await state.upstream.serves(dialect.native_path, headers,
                                                                           dialect.key_header)


async def _send(state: State, call: ChatCall, forwarded: dict[str, Any], native: bool,
                headers: Mapping[str, str]) -> UpstreamReply:
    """The request to the upstream: as sent where nothing changed (its very bytes), else ``forwarded``;
    translated to chat completions where the upstream lacks the API (its errors then in the client's API)."""
    assert state.upstream is not None
    if native:
        assert call.dialect.native_path is not None
        raw = call.raw if forwarded is call.body else None
        return await state.upstream.send("POST", call.dialect.native_path, headers, None if raw else forwarded,
                                         content=raw, key_header=call.dialect.key_header)
    try:
        return await state.upstream.send("POST", CHAT_PATH, headers, call.dialect.to_chat(forwarded))
    except UpstreamError as err:
        raise upstream_api_error(err) from None


def _route(dialect: Dialect, native: bool) -> tuple[str, bool]:
    """Where the request went upstream, and whether it went there translated."""
    return (dialect.native_path or CHAT_PATH, False) if native else (CHAT_PATH, dialect.native_path != CHAT_PATH)


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """The upstream's answer as a JSON object; a 502 naming ``what`` was expected when it is not one."""
    try:
        whole = json.loads(data)
    except ValueError:
        whole = None
    if not isinstance(whole, dict):
        raise ApiError(502, f"upstream answered with no {what}: {data[:200]!r}", "upstream_error",
                       "bad_upstream_answer")
    return whole


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; if the client goes away first, cancel it and raise ClientGone; if the server's
    grace ends first, cancel it and raise ServerClosing."""
    return await _race(awaitable, state_of(request).closing, _disconnected(request))


async def _until_closed(state: State, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` in a stream already answering (its client's leaving cancels the stream itself)."""
    return await _race(awaitable, state.closing)


async def _race(awaitable: Awaitable[T], closing: asyncio.Event, gone: Awaitable[None] | None = None) -> T:
    work = asyncio.ensure_future(awaitable)
    watches = {asyncio.ensure_future(closing.wait()), *([asyncio.ensure_future(gone)] if gone else [])}
    try:
        await asyncio.wait({work, *watches}, return_when=asyncio.FIRST_COMPLETED)
        if closing.is_set() and not work.done():  # a generation cancelled at the close answers at once
            await asyncio.wait({work}, timeout=LAST_WORDS_SECONDS)
    finally:
        for watch in watches:
            watch.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        return work.result()
    if closing.is_set():
        raise ServerClosing("the server is shutting down")
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
