"""Ollama's routes besides chat and generate (those are ``chat.py``'s, through the Ollama dialect):
``/api/tags``, ``/api/show``, ``/api/version``, ``/api/ps``, ``/api/embed``.

With an upstream they answer for it (Ollama's own answer where the upstream is Ollama); without one,
for BPO's model, honestly: it is loaded, and it makes no embeddings.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import UpstreamError
from ..version import __version__
from . import chat, parse
from .dialects import OLLAMA_GENERATE
from .dialects.ollama import show as show_body
from .dialects.ollama import tags as tags_body
from .errors import ApiError, upstream_api_error
from .state import State, state_of


async def generate(request: Request) -> Response:
    """``/api/generate``: an empty prompt is Ollama's "load the model" call; anything else is a chat."""
    state = state_of(request)
    raw = await parse.raw_body(request, state.settings.max_body_bytes)
    body = parse.json_object(raw)
    if body.get("prompt") in (None, ""):
        return JSONResponse(OLLAMA_GENERATE.line(str(body.get("model")), "", done=True, done_reason="load"))
    return await chat.answer(request, state, chat.parsed(request, state, OLLAMA_GENERATE, raw, body))


async def tags(request: Request) -> Response:
    return JSONResponse(tags_body(await _model_ids(request)))


async def show(request: Request) -> Response:
    state = state_of(request)
    body = await parse.json_body(request, state.settings.max_body_bytes)
    model = body.get("model") or body.get("name")
    if not isinstance(model, str):
        raise ApiError(400, "missing model: give \"model\" as a string", code="invalid_value")
    if state.upstream is not None:
        return JSONResponse(show_body(model))
    info = state.owner.optimizer.info
    return JSONResponse(show_body(model, info.architecture, info.file_type))


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})


async def ps(request: Request) -> Response:
    """The models loaded: an Ollama upstream's own list; another upstream's is not known (none listed);
    without one, BPO's model."""
    state = state_of(request)
    if state.upstream is not None:
        answer = await _from_ollama(request, state, "GET", "/api/ps")
        return JSONResponse(answer if answer is not None else {"models": []})
    info = state.owner.optimizer.info
    model = tags_body([info.name])["models"][0]
    model["details"].update(format="gguf", family=info.architecture, quantization_level=info.file_type)
    return JSONResponse({"models": [{**model, "expires_at": "9999-12-31T23:59:59Z", "size_vram": 0}]})


async def embed(request: Request) -> Response:
    """Embeddings: an Ollama upstream's own, another upstream's ``/embeddings`` in Ollama's shape; BPO makes none."""
    state = state_of(request)
    body = await parse.json_body(request, state.settings.max_body_bytes)
    if state.upstream is None:
        raise ApiError(400, f"{state.owner.optimizer.info.name} rewrites prompts and makes no embeddings; "
                       "ask an embedding model", code="invalid_value")
    answer = await _from_ollama(request, state, "POST", "/api/embed", body)
    if answer is not None:
        return JSONResponse(answer)
    reply = await chat.until_disconnect(request, state.upstream.send(
        "POST", "/embeddings", request.headers, {"model": body.get("model"), "input": body.get("input")}))
    listed = chat.json_object(await reply.body(), "embedding list").get("data") or []
    vectors = [item.get("embedding") for item in sorted(listed, key=lambda item: item.get("index", 0))]
    return JSONResponse({"model": body.get("model"), "embeddings": vectors})


async def _from_ollama(request: Request, state: State, method: str, path: str,
                       body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The upstream's answer on Ollama's own route, or None where the upstream has no such route."""
    assert state.upstream is not None
    try:
        reply = await chat.until_disconnect(request, state.upstream.send(method, path, request.headers, body,
                                                                         at_root=True))
    except UpstreamError as err:
        if err.status in (404, 405):
            return None
        raise upstream_api_error(err) from None
    try:
        return chat.json_object(await reply.body(), "answer")
    except ApiError:
        return None


async def _model_ids(request: Request) -> list[str]:
    state = state_of(request)
    if state.upstream is None:
        return [state.owner.optimizer.info.name]
    reply = await chat.until_disconnect(request, state.upstream.send("GET", "/models", request.headers))
    listed = chat.json_object(await reply.body(), "model list")
    models = listed.get("data")
    return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)] \
        if isinstance(models, list) else []
