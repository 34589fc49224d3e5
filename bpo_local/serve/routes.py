"""The routes besides chat (``chat.py``): health, models, BPO's own /v1/optimize, and everything an
upstream answers unchanged. Parse, call the owner or the upstream, render; errors go to handlers.py."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import BpoLocalError, QueueFull, ServerClosing
from ..optimizer import OptimizeResult
from . import chat, parse, streams
from .dialects import OPENAI_CHAT, OPENAI_TEXT, Rendering, for_path
from .errors import from_library
from .owner import EngineOwner, Ticket
from .state import state_of

Outcome = OptimizeResult | BpoLocalError


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    state = state_of(request)
    if state.upstream is not None:
        reply = await chat.until_disconnect(request, state.upstream.send("GET", "/models", request.headers))
        return Response(await reply.body(), status_code=reply.status, headers=reply.headers)
    name = state.owner.optimizer.info.name
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                     "owned_by": "bpo-local"}]})


async def optimize(request: Request) -> Response:
    """``{"prompt"}`` -> what ``optimize --json`` prints; ``{"prompts": [...]}`` -> ``{"results": [...]}``,
    a prompt that failed alone holding ``{"error"}``."""
    state = state_of(request)
    body = await parse.json_body(request, state.settings.max_body_bytes)
    prompts = parse.prompts(body, state.settings.max_prompts)
    how = chat.optimization_for(state, body)
    if "prompts" not in body:
        ticket = state.owner.submit(prompts[0], mode=how.mode, seed=how.seed, overrides=how.overrides)
        return JSONResponse((await chat.until_disconnect(request, ticket.result())).to_dict())
    tickets = _submit_each(state.owner, prompts, how)
    outcomes = await chat.until_disconnect(request, asyncio.gather(*(_outcome(t) for t in tickets)))
    return JSONResponse({"results": [_item(o) for o in outcomes]})


def _submit_each(owner: EngineOwner, prompts: list[str], how: parse.Optimization) -> list[Ticket | BpoLocalError]:
    """A ticket per prompt, or the error that prompt alone got; a full queue fails them all."""
    tickets: list[Ticket | BpoLocalError] = []
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
            if isinstance(ticket, Ticket):
                ticket.cancel()
        raise
    return tickets


async def _outcome(ticket: Ticket | BpoLocalError) -> Outcome:
    if isinstance(ticket, BpoLocalError):
        return ticket
    try:
        return await ticket.result()
    except BpoLocalError as err:
        return err


def _item(outcome: Outcome) -> dict:
    if isinstance(outcome, BpoLocalError):
        return OPENAI_CHAT.error_body(from_library(outcome))
    return outcome.to_dict()


async def completions(request: Request) -> Response:
    """BPO as the model for ``{"prompt"}``; with an upstream, passed through as it is."""
    state = state_of(request)
    if state.upstream is not None:
        return await passthrough(request)
    raw = await parse.raw_body(request, state.settings.max_body_bytes)
    return await chat.bpo_answers(request, state, chat.parsed(request, state, OPENAI_TEXT, raw))


async def passthrough(request: Request) -> Response:
    """Any other route, in proxy mode: to the upstream unchanged, its answer back as it comes."""
    state = state_of(request)
    assert state.upstream is not None
    path = request.url.path.removeprefix("/v1")
    if request.url.query:
        path += "?" + request.url.query
    body = await parse.raw_body(request, state.settings.max_body_bytes)
    dialect = for_path(request.url.path)
    reply = await chat.until_disconnect(request, state.upstream.send(request.method, path, request.headers,
                                                                     content=body or None,
                                                                     key_header=dialect.key_header))
    chunks = streams.passed_on(streams.until_closing(reply, state.closing), reply.headers.get("content-type", ""),
                               lambda err: dialect.failed_event(err, Rendering("")))
    return StreamingResponse(chunks, status_code=reply.status, headers=reply.headers)
