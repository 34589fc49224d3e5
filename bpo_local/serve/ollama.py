"""Ollama's native API on the wire: its chat and generate bodies as OpenAI chat bodies, and OpenAI
answers (whole, or an SSE stream) as Ollama's JSON and NDJSON.

Only the translation lives here; ``ollama_routes`` calls it. Ollama's ``options`` map to the OpenAI
fields an upstream takes (``num_predict`` is ``max_tokens``; top_k, min_p and repeat_penalty pass
by name, as llama-server, vLLM and Ollama take them).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Literal

from .errors import ApiError

Kind = Literal["chat", "generate"]
NDJSON = "application/x-ndjson"

_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
            "num_predict": "max_tokens", "stop": "stop", "min_p": "min_p", "repeat_penalty": "repeat_penalty",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
"""Ollama option -> OpenAI field; other options (num_ctx, num_gpu, …) belong to Ollama's runner and are dropped."""
_EVENT_END = re.compile(rb"\r?\n\r?\n")


def wants_stream(body: dict[str, Any]) -> bool:
    """Ollama streams unless ``stream`` is false."""
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}", code="invalid_value")
    return stream


def chat_body(body: dict[str, Any], kind: Kind) -> dict[str, Any]:
    """An OpenAI chat body for an Ollama ``/api/chat`` or ``/api/generate`` body."""
    messages = _messages(body) if kind == "chat" else _prompt_messages(body)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": wants_stream(body)}
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "options must be an object", code="invalid_value")
    for name, field in _OPTIONS.items():
        if options.get(name) is not None:
            chat[field] = options[name]
    if isinstance(chat.get("max_tokens"), int) and chat["max_tokens"] < 0:  # -1: no limit, -2: fill the context
        del chat["max_tokens"]
    if body.get("format") == "json":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(body.get("format"), dict):
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": body["format"]}}
    if body.get("tools"):
        chat["tools"] = body["tools"]
    return chat


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of objects", code="invalid_value")
    out: list[dict[str, Any]] = []
    calls: list[str] = []
    for i, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.get("role"), "content": message.get("content") or ""}
        if message.get("images"):
            item["content"] = [{"type": "text", "text": item["content"]},
                               *({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                                 for image in message["images"])]
        if message.get("tool_calls"):
            calls = [f"call_{i}_{j}" for j in range(len(message["tool_calls"]))]
            item["tool_calls"] = [{"id": cid, "type": "function", "function": _openai_function(call)}
                                  for cid, call in zip(calls, message["tool_calls"])]
        if message.get("role") == "tool":
            item["tool_call_id"] = calls.pop(0) if calls else f"call_{i}"
        out.append(item)
    return out


def _prompt_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "missing prompt: give \"prompt\" as a string", code="missing_prompt")
    system = body.get("system")
    user: dict[str, Any] = {"role": "user", "content": prompt}
    return [{"role": "system", "content": system}, user] if isinstance(system, str) and system else [user]


def _openai_function(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    return {"name": function.get("name"),
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}


def _ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        out.append({"function": {"name": function.get("name"), "arguments": arguments}})
    return out


def line(kind: Kind, model: str, text: str, *, done: bool = False, calls: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    """One Ollama answer object: a piece of a stream, or (``done``) the last or only one."""
    out: dict[str, Any] = {"model": model, "created_at": datetime.now(timezone.utc).isoformat()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
    else:
        out["response"] = text
    out["done"] = done
    return {**out, **extra}


def final(kind: Kind, model: str, text: str, finish: str | None, usage: dict[str, Any] | None, started: float,
          calls: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``done`` object: the finish reason, the token counts where known, the time taken (ns)."""
    counts = {"prompt_eval_count": usage.get("prompt_tokens"), "eval_count": usage.get("completion_tokens")} \
        if usage else {}
    return line(kind, model, text, done=True, calls=calls, done_reason="length" if finish == "length" else "stop",
                total_duration=int((time.monotonic() - started) * 1e9), **counts, **extra)


def from_openai(kind: Kind, model: str, answer: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:
    """A whole OpenAI chat completion as Ollama's answer."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = _ollama_calls(message.get("tool_calls") or [])
    return final(kind, model or answer.get("model") or "", message.get("content") or "", choice.get("finish_reason"),
                 answer.get("usage"), started, calls, **extra)


async def from_sse(kind: Kind, model: str, chunks: AsyncIterator[bytes], started: float,
                   record: dict[str, Any]) -> AsyncIterator[bytes]:
    """An upstream's SSE stream as Ollama's NDJSON: a line per piece of text (the first with ``record``
    as ``bpo``), tool calls whole once they are complete, and the ``done`` line."""
    extra: dict[str, Any] = {"bpo": record}
    calls: dict[int, dict[str, Any]] = {}
    finish = usage = None
    async for chunk in _sse_objects(chunks):
        choice = (chunk.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            _merge_call(calls.setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}}), call)
        finish = choice.get("finish_reason") or finish
        usage = chunk.get("usage") or usage
        if delta.get("content"):
            yield _ndjson(line(kind, model, delta["content"], **extra))
            extra = {}
    done = final(kind, model, "", finish, usage, started, _ollama_calls([calls[i] for i in sorted(calls)]), **extra)
    yield _ndjson(done)


def _merge_call(into: dict[str, Any], delta: dict[str, Any]) -> None:
    function = delta.get("function") or {}
    into["function"]["name"] += function.get("name") or ""
    into["function"]["arguments"] += function.get("arguments") or ""


async def _sse_objects(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an SSE stream's ``data:`` events (``[DONE]`` and comments skipped)."""
    held = b""
    async for chunk in chunks:
        held += chunk
        while match := _EVENT_END.search(held):
            event, held = held[:match.start()], held[match.end():]
            for raw in event.splitlines():
                if raw.startswith(b"data:") and raw[5:].strip() not in (b"", b"[DONE]"):
                    try:
                        obj = json.loads(raw[5:])
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        yield obj


def _ndjson(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def tags(model_ids: list[str]) -> dict[str, Any]:
    """``/api/tags`` for these model names (sizes and digests are the upstream's to know: zero and empty)."""
    now = datetime.now(timezone.utc).isoformat()
    return {"models": [{"name": m, "model": m, "modified_at": now, "size": 0, "digest": "",
                        "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""}}
                       for m in model_ids]}


def show(model: str, family: str = "", file_type: str = "") -> dict[str, Any]:
    """``/api/show`` for ``model``: what bpo-local knows of it."""
    return {"modelfile": "", "parameters": "", "template": "", "model_info": {}, "capabilities": ["completion"],
            "details": {"format": "gguf" if file_type else "", "family": family, "parameter_size": "",
                        "quantization_level": file_type}}
