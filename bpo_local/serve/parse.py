"""Request bodies in, typed values out: every 400 a malformed body can earn is raised here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from .errors import ApiError

MODE_HEADER = "x-bpo-mode"
TURNS_HEADER = "x-bpo-turns"
SHOW_HEADER = "x-bpo-show-rewrite"
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
OFF = "off"
TURNS = ("first", "all")
"""Which user turns the proxy rewrites: a conversation's first only, or each new one."""

_INTS = ("n", "top_k", "max_tokens", "seed")
_FLOATS = ("temperature", "top_p")


@dataclass(frozen=True)
class Optimization:
    """What to optimize and how: the preset's name (``mode``), the sampling overrides the CLI takes, and the seed."""

    mode: str
    seed: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


async def raw_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(len(data), limit)
    return bytes(data)


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, at most ``limit`` bytes (413 beyond it, 400 if it is not JSON)."""
    return json_object(await raw_body(request, limit))


def json_object(data: bytes) -> dict[str, Any]:
    """``data`` as a JSON object (400 if it is not one)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return body


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the body is {size} bytes; this server takes at most {limit}", code="body_too_large")


def optimization(body: dict[str, Any], default_mode: str, default_seed: int | None = None, *, max_n: int,
                 presets: Sequence[str]) -> Optimization:
    """The optimizer's settings from a body: ``mode`` (one of ``presets``' names) and the overrides n (at most
    ``max_n``), temperature, top_p, top_k, max_tokens, seed."""
    mode = body.get("mode", default_mode)
    if mode not in presets:
        raise ApiError(400, f"unknown preset {mode!r} in \"mode\"; choose from: {', '.join(presets)}",
                       code="invalid_value")
    values: dict[str, Any] = {}
    for key in _INTS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ApiError(400, f"{key} must be an integer, got {value!r}", code="invalid_value")
        values[key] = value
    if values["n"] is not None and values["n"] > max_n:
        raise ApiError(400, f"n {values['n']} is over this server's limit of {max_n}; ask for at most {max_n}",
                       code="invalid_value")
    for key in _FLOATS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(400, f"{key} must be a number, got {value!r}", code="invalid_value")
        values[key] = value
    seed = values.pop("seed")
    seed = default_seed if seed is None else seed
    return Optimization(mode, seed, {k: v for k, v in values.items() if v is not None})


def header_mode(request: Request, default_mode: str, presets: Sequence[str]) -> str:
    """The proxy's preset for this request: ``X-BPO-Mode`` (a name in ``presets``, or off; any case where the
    exact name is unknown), else the default."""
    mode = request.headers.get(MODE_HEADER, default_mode).strip()
    mode = mode if mode in presets else mode.lower()
    if mode != OFF and mode not in presets:
        raise ApiError(400, f"X-BPO-Mode {mode!r} is not a known preset; choose from: {', '.join((*presets, OFF))}",
                       code="invalid_value")
    return mode


def client_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: a Bearer token (OpenAI's and Ollama's clients), else ``x-api-key`` (Anthropic's)."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return given.strip()
    return headers.get("x-api-key") or None


def header_show(request: Request, default: bool) -> bool:
    """Whether the answer shows the rewrite: ``X-BPO-Show-Rewrite`` (true or false), else the default."""
    given = request.headers.get(SHOW_HEADER)
    if given is None:
        return default
    if given.strip().lower() not in (*_YES, *_NO):
        raise ApiError(400, f"X-BPO-Show-Rewrite {given!r} is not one of: true, false", code="invalid_value")
    return given.strip().lower() in _YES


def header_turns(request: Request, default_turns: str) -> str:
    """Which turns the proxy rewrites for this request: ``X-BPO-Turns`` (first or all), else the default."""
    turns = request.headers.get(TURNS_HEADER, default_turns).strip().lower()
    if turns not in TURNS:
        raise ApiError(400, f"X-BPO-Turns {turns!r} is not one of: {', '.join(TURNS)}", code="invalid_value")
    return turns


def prompts(body: dict[str, Any], max_prompts: int = 1) -> list[str]:
    """``prompt`` (a string) or ``prompts`` (a list of at most ``max_prompts`` strings) of /v1/optimize or
    /v1/completions."""
    if "prompts" in body:
        items = body["prompts"]
        if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
            raise ApiError(400, "prompts must be a non-empty list of strings", code="invalid_value")
        if len(items) > max_prompts:
            raise ApiError(400, f"{len(items)} prompts are over this server's limit of {max_prompts} per request; "
                           "send them in several requests", code="invalid_value")
        return items
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "missing prompt: give \"prompt\" as a string", code="missing_prompt")
    return [prompt]
