"""The routes: parse the request, call the owner or the upstream, render. Errors go to errors.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import BpoLocalError, QueueFull, ServerClosing
from . import openai, parse
from .errors import ClientGone, error_body, from_library
from .rewrite import Rewrite

T = TypeVar("T")
SSE = "text/event-stream"


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    state = request.app.state.bpo
    if state.upstream is not None:
        reply = await until_disconnect(request, state.upstream.send("GET", "/models", request.headers))
        return Response(await reply.body(), status_code=reply.status, headers=reply.headers)
    name = state.owner.optimizer.info.name
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                     "owned_by": "bpo-local"}]})


async def optimize(request: Request) -> Response:
    """``{"prompt"}`` -> what ``optimize --json`` prints; ``{"prompts": [...]}`` -> ``{"results": [...]}``,
    a prompt that failed alone holding ``{"error"}``."""
    state = request.app.state.bpo
    body = await parse.json_body(request, state.settings.max_body_bytes)
    prompts = parse.prompts(body, state.settings.max_prompts)
    how = optimization_for(state, body)
    if "prompts" not in body:
        ticket = state.owner.submit(prompts[0], mode=how.mode, seed=how.seed, overrides=how.overrides)
        return JSONResponse((await until_disconnect(request, ticket.result())).to_dict())
    tickets = _submit_each(state.owner, prompts, how)
    outcomes = await until_disconnect(request, asyncio.gather(*(_outcome(t) for t in tickets)))
    return JSONResponse({"results": [_item(o) for o in outcomes]})


def optimization_for(state: Any, body: dict[str, Any], **how: Any) -> parse.Optimization:
    """The body's preset and settings, with this server's defaults and limits and the presets it knows."""
    return parse.optimization(body, state.settings.mode, state.settings.seed, max_n=state.settings.max_n,
                              presets=state.owner.optimizer.preset_names(), **how)


def _submit_each(owner: Any, prompts: list[str], how: parse.Optimization) -> list[Any]:
    """A ticket per prompt, or the error that prompt alone got; a full queue fails them all."""
    tickets: list[Any] = []
    try:
        for prompt in prompts:
            try:
                tickets.append(owner.submit(prompt, mode=how.mode, seed=how.seed, overrides=how.overrides))
            except (QueueFull, ServerClosing):
                raise
            except BpoLocalError as err:
                tickets.append(err)
    except BaseException:
        for ticket in tickets:
            if not isinstance(ticket, BpoLocalError):
                ticket.cancel()
        raise
    return tickets


async def _outcome(ticket: Any) -> Any:
    if isinstance(ticket, BpoLocalError):
        return ticket
    try:
        return await ticket.result()
    except BpoLocalError as err:
        return err


def _item(outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, BpoLocalError):
        err = from_library(outcome)
        return error_body(err.message, err.type, err.code)
    return outcome.to_dict()


async def chat_completions(request: Request) -> Response:
    state = request.app.state.bpo
    if state.upstream is not None:
        return await _proxy_chat(request, state)
    body = await parse.json_body(request, state.settings.max_body_bytes)
    _, text = parse.last_user_turn(body)
    how = optimization_for(state, body, max_tokens_key=("max_tokens", "max_completion_tokens"))
    return await _answer(request, state, "chat", text, how, parse.wants_stream(body))


async def completions(request: Request) -> Response:
    state = request.app.state.bpo
    if state.upstream is not None:
        return await passthrough(request)
    body = await parse.json_body(request, state.settings.max_body_bytes)
    prompts = parse.prompts({"prompt": body.get("prompt")})
    how = optimization_for(state, body)
    return await _answer(request, state, "text", prompts[0], how, parse.wants_stream(body))


async def _answer(request: Request, state: Any, kind: openai.Kind, text: str, how: parse.Optimization,
                  stream: bool) -> Response:
    """BPO as the model: the rewrite of ``text`` as a completion, whole or streamed."""
    ticket = state.owner.submit(text, mode=how.mode, seed=how.seed, overrides=how.overrides)
    if not stream:
        result = await until_disconnect(request, ticket.result())
        return JSONResponse(openai.completion(kind, result))
    await until_disconnect(request, ticket.started())  # an error before the first token still gets its status
    return StreamingResponse(openai.chunks(kind, ticket, state.owner.optimizer.info.name), media_type=SSE)


async def _proxy_chat(request: Request, state: Any) -> Response:
    """The conversation with the proxy's turn rules applied, forwarded; the upstream's answer back."""
    body = await parse.json_body(request, state.settings.max_body_bytes)
    stream = parse.wants_stream(body)
    body, done = await proxied(request, state, body)
    reply = await until_disconnect(request, state.upstream.send("POST", "/chat/completions", request.headers, body))
    headers = {**reply.headers, **done.headers()}
    if stream:
        return StreamingResponse(openai.with_record(reply.chunks(), done.record()), status_code=reply.status,
                                 headers=headers)
    data = await reply.body()
    try:
        answer = json.loads(data)
    except ValueError:
        return Response(data, status_code=reply.status, headers=headers)
    if isinstance(answer, dict):
        answer["bpo"] = done.record()
    return JSONResponse(answer, status_code=reply.status, headers=headers)


async def proxied(request: Request, state: Any, body: dict[str, Any]) -> tuple[dict[str, Any], Rewrite]:
    """``body`` with its messages as they go upstream (the turn rules applied), and what was done."""
    messages = parse.messages(body)
    mode = parse.header_mode(request, state.settings.mode, state.owner.optimizer.preset_names())
    turns = parse.header_turns(request, state.settings.turns)
    forwarded, done = await until_disconnect(
        request, state.rewriter.conversation(messages, mode, turns, body.get("model")))
    return ({**body, "messages": forwarded} if forwarded is not messages else body), done


async def passthrough(request: Request) -> Response:
    """Any other route, in proxy mode: to the upstream unchanged, its answer back as it comes."""
    state = request.app.state.bpo
    path = request.url.path.removeprefix("/v1")
    if request.url.query:
        path += "?" + request.url.query
    body = await parse.raw_body(request, state.settings.max_body_bytes)
    reply = await until_disconnect(request, state.upstream.send(request.method, path, request.headers,
                                                                content=body or None))
    return StreamingResponse(reply.chunks(), status_code=reply.status, headers=reply.headers)


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
