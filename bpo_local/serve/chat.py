"""The one chat pipeline, whatever API a request came in: the request as a conversation (its dialect),
the proxy's turn rules and rewrite, then the upstream in the request's own API (or as chat completions
where the upstream lacks it), or BPO's own answer when there is no upstream.

    Route("/v1/messages", chat.endpoint(dialects.ANTHROPIC), methods=["POST"])
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import sse
from ..errors import UpstreamError
from . import bpo_answer, parse
from .dialects import Conversation, Dialect, Rendering
from .dialects.openai_chat import read_answer, read_stream
from .errors import ApiError, ClientGone
from .rewrite import Rewrite
from .state import State, state_of

T = TypeVar("T")
CHAT_PATH = "/chat/completions"
"""Where an upstream answers requests translated from a dialect it does not speak."""


@dataclass(frozen=True)
class ChatCall:
    """One chat request, parsed once: its dialect, its body as sent, the conversation as BPO sees it, and the
    preset (``mode``) and turn rule the proxy applies."""

    dialect: Dialect
    body: dict[str, Any]
    conversation: Conversation
    mode: str
    rule: str
    rendering: Rendering = field(default_factory=lambda: Rendering(""))


def endpoint(dialect: Dialect) -> Callable[[Request], Awaitable[Response]]:
    """The route for ``dialect``'s chat requests."""

    async def chat(request: Request) -> Response:
        state = state_of(request)
        body = await parse.json_body(request, state.settings.max_body_bytes)
        return await answer(request, state, parsed(request, state, dialect, body))

    return chat


def parsed(request: Request, state: State, dialect: Dialect, body: dict[str, Any]) -> ChatCall:
    conversation = dialect.conversation(body)
    presets = state.owner.optimizer.preset_names()
    mode = parse.header_mode(request, state.settings.mode or "", presets)
    rule = parse.header_turns(request, state.settings.turns)
    model = state.owner.optimizer.info.name if state.upstream is None else str(conversation.model or "")
    return ChatCall(dialect, body, conversation, mode, rule, Rendering(model))


async def answer(request: Request, state: State, call: ChatCall) -> Response:
    if state.upstream is None:
        return await bpo_answers(request, state, call)
    forwarded, done = await rewritten(request, state, call)
    native = call.dialect.native_path
    if native == CHAT_PATH or native and await until_disconnect(
            request, state.upstream.serves(native, request.headers, call.dialect.key_header)):
        return await _native(request, state, call, forwarded, done)
    return await _translated(request, state, call, forwarded, done)


async def rewritten(request: Request, state: State, call: ChatCall) -> tuple[dict[str, Any], Rewrite]:
    """The body as it goes upstream (the turn rules applied), and what was done."""
    assert state.rewriter is not None
    conversation = call.conversation
    texts, done = await until_disconnect(request, state.rewriter.conversation(
        conversation.turns, call.mode, call.rule, conversation.model, conversation.continues))
    return call.dialect.with_texts(call.body, texts), done


async def bpo_answers(request: Request, state: State, call: ChatCall) -> Response:
    """BPO as the model: the last user turn's rewrite is the answer, whole or streamed."""
    text = call.conversation.last_user_text()
    how = optimization_for(state, call.dialect.to_chat(call.body))
    ticket = state.owner.submit(text, mode=how.mode, seed=how.seed, overrides=how.overrides)
    if not call.conversation.stream:
        result = await until_disconnect(request, ticket.result())
        return JSONResponse(call.dialect.answer(bpo_answer.answer(result, call.rendering.model), call.rendering))
    await until_disconnect(request, ticket.started())  # an error before the first token still gets its status
    return StreamingResponse(call.dialect.stream(bpo_answer.pieces(ticket), call.rendering, {}),
                             media_type=call.dialect.media_type)


def optimization_for(state: State, body: dict[str, Any]) -> parse.Optimization:
    """The body's preset and settings, with this server's defaults and limits and the presets it knows."""
    return parse.optimization(body, state.settings.mode or "", state.settings.seed, max_n=state.settings.max_n,
                              presets=state.owner.optimizer.preset_names())


async def _native(request: Request, state: State, call: ChatCall, forwarded: dict[str, Any],
                  done: Rewrite) -> Response:
    """The upstream speaks the request's API: the request goes as it is (rewritten), the answer comes back
    as it is, with the ``bpo`` record added."""
    assert state.upstream is not None and call.dialect.native_path is not None
    reply = await until_disconnect(request, state.upstream.send(
        "POST", call.dialect.native_path, request.headers, forwarded, key_header=call.dialect.key_header))
    record = done.record(call.dialect.native_path)
    headers = {**reply.headers, **done.headers()}
    if call.conversation.stream:
        return StreamingResponse(sse.with_first_json(reply.chunks(), lambda first: first.update(bpo=record)),
                                 status_code=reply.status, headers=headers)
    data = await reply.body()
    try:
        whole = json.loads(data)
    except ValueError:
        return Response(data, status_code=reply.status, headers=headers)
    if isinstance(whole, dict):
        whole["bpo"] = record
    return JSONResponse(whole, status_code=reply.status, headers=headers)


async def _translated(request: Request, state: State, call: ChatCall, forwarded: dict[str, Any],
                      done: Rewrite) -> Response:
    """The request as chat completions, the answer back in the request's API."""
    assert state.upstream is not None
    body = call.dialect.to_chat(forwarded)
    try:
        reply = await until_disconnect(request, state.upstream.send("POST", CHAT_PATH, request.headers, body))
    except UpstreamError as err:  # the upstream spoke chat completions: the client gets its own API's shape
        raise ApiError(err.status, f"upstream answered HTTP {err.status}: {error_text(err.body)}",
                       "upstream_error", "upstream_error") from None
    record = {"bpo": done.record(CHAT_PATH, translated=call.dialect.native_path != CHAT_PATH)}
    if call.conversation.stream:
        return StreamingResponse(call.dialect.stream(read_stream(reply.chunks()), call.rendering, record),
                                 media_type=call.dialect.media_type, headers=done.headers())
    whole = json_object(await reply.body(), "chat completion")
    return JSONResponse(call.dialect.answer(read_answer(whole, record), call.rendering), headers=done.headers())


def error_text(body: bytes) -> str:
    """The message of an upstream's error body (OpenAI's, Ollama's or Anthropic's shape), else its first line."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    text = error.get("message") if isinstance(error, dict) else error
    if not isinstance(text, str):
        text = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else "no message"
    return text[:300]


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
    """Await ``awaitable``; if the client goes away first, cancel it and raise ClientGone."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        raise ClientGone()
    return work.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
