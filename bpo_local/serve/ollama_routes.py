"""Ollama's native routes: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/version``, ``/api/show``.

With an upstream, chat and generate go through the proxy's turn rules and the upstream's OpenAI
chat route, and the answer comes back in Ollama's shape; without one, BPO answers as an Ollama model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..version import __version__
from . import ollama, openai, parse
from .errors import ApiError
from .ollama import NDJSON, Kind
from .routes import optimization_for, proxied, until_disconnect


async def chat(request: Request) -> Response:
    return await _answer(request, "chat")


async def generate(request: Request) -> Response:
    return await _answer(request, "generate")


async def _answer(request: Request, kind: Kind) -> Response:
    state = request.app.state.bpo
    started = time.monotonic()
    body = await parse.json_body(request, state.settings.max_body_bytes)
    if kind == "generate" and body.get("prompt") in (None, ""):  # Ollama's "load the model" call
        return JSONResponse(ollama.line(kind, str(body.get("model")), "", done=True, done_reason="load"))
    openai_body = ollama.chat_body(body, kind)
    if state.upstream is None:
        return await _bpo_answers(request, state, kind, openai_body, started)
    openai_body, done = await proxied(request, state, openai_body)
    reply = await until_disconnect(request, state.upstream.send("POST", "/chat/completions", request.headers,
                                                                openai_body))
    model = str(body.get("model") or "")
    if openai_body["stream"]:
        return StreamingResponse(ollama.from_sse(kind, model, reply.chunks(), started, done.record()),
                                 media_type=NDJSON, headers=done.headers())
    answer = _json_object(await reply.body(), "chat completion")
    return JSONResponse(ollama.from_openai(kind, model, answer, started, bpo=done.record()), headers=done.headers())


async def _bpo_answers(request: Request, state: Any, kind: Kind, body: dict[str, Any], started: float) -> Response:
    """BPO as the Ollama model: the last user turn's rewrite is the answer."""
    _, text = parse.last_user_turn(body)
    how = optimization_for(state, body)  # Ollama's options, checked as the OpenAI routes check them
    ticket = state.owner.submit(text, mode=how.mode, seed=how.seed, overrides=how.overrides)
    model = state.owner.optimizer.info.name
    if not body["stream"]:
        result = await until_disconnect(request, ticket.result())
        return JSONResponse(_done(kind, model, openai.content(result), result, started))
    await until_disconnect(request, ticket.started())

    async def lines() -> Any:
        async for piece in openai.pieces(ticket):
            yield ollama.line(kind, model, piece)
        yield _done(kind, model, "", await ticket.result(), started)

    return StreamingResponse((json.dumps(obj, ensure_ascii=False) + "\n" async for obj in lines()), media_type=NDJSON)


def _done(kind: Kind, model: str, text: str, result: Any, started: float) -> dict[str, Any]:
    return ollama.final(kind, model, text, openai.finish_reason(result), openai.usage(result), started,
                        bpo=result.to_dict())


async def tags(request: Request) -> Response:
    return JSONResponse(ollama.tags(await _model_ids(request)))


async def show(request: Request) -> Response:
    state = request.app.state.bpo
    body = await parse.json_body(request, state.settings.max_body_bytes)
    model = body.get("model") or body.get("name")
    if not isinstance(model, str):
        raise ApiError(400, "missing model: give \"model\" as a string", code="invalid_value")
    if state.upstream is not None:
        return JSONResponse(ollama.show(model))
    info = state.owner.optimizer.info
    return JSONResponse(ollama.show(model, info.architecture, info.file_type))


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})


async def _model_ids(request: Request) -> list[str]:
    state = request.app.state.bpo
    if state.upstream is None:
        return [state.owner.optimizer.info.name]
    reply = await until_disconnect(request, state.upstream.send("GET", "/models", request.headers))
    listed = _json_object(await reply.body(), "model list")
    models = listed.get("data")
    return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)] \
        if isinstance(models, list) else []


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """The upstream's answer as a JSON object; a 502 naming ``what`` was expected when it is not one."""
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ApiError(502, f"upstream answered with no {what}: {data[:200]!r}", "upstream_error",
                       "bad_upstream_answer")
    return answer
