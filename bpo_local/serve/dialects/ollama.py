"""Ollama's native API (``/api/chat``, ``/api/generate``): its bodies go upstream as OpenAI chat bodies,
answers come back as Ollama's JSON and NDJSON, errors as ``{"error": "..."}``.

Ollama's ``options`` map to the OpenAI fields an upstream takes (``num_predict`` is ``max_tokens``; top_k,
min_p and repeat_penalty pass by name, as llama-server, vLLM and Ollama take them).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from ..answer import Answer, End, Failed, Piece, TextPiece, ToolCall, ToolCallPiece, Usage
from ..errors import ApiError
from .base import Conversation, Dialect, Rendering, edit_texts, wants_stream
from .openai_chat import message_turn

Kind = Literal["chat", "generate"]
NDJSON = "application/x-ndjson"

_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
            "num_predict": "max_tokens", "stop": "stop", "min_p": "min_p", "repeat_penalty": "repeat_penalty",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
"""Ollama option -> OpenAI field; other options (num_ctx, num_gpu, …) belong to Ollama's runner and are dropped."""


class Ollama(Dialect):
    """``/api/chat`` (``kind`` chat) or ``/api/generate`` (``kind`` generate)."""

    media_type = NDJSON

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    def conversation(self, body: dict[str, Any]) -> Conversation:
        chat = self.to_chat(body)
        return Conversation(tuple(message_turn(m) for m in chat["messages"]), body.get("model"), chat["stream"])

    def with_texts(self, body: dict[str, Any], texts: Mapping[int, str],
                   kept: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        if not texts:
            return body
        if self.kind == "generate":
            return {**body, "prompt": texts[max(texts)]}  # the prompt is the last (only) user turn
        return {**body, "messages": [{**m, "content": texts[i]} if i in texts else m
                                     for i, m in enumerate(body["messages"])]}

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI chat body for an Ollama ``/api/chat`` or ``/api/generate`` body."""
        messages = _messages(body) if self.kind == "chat" else _prompt_messages(body)
        chat: dict[str, Any] = {"model": body.get("model"), "messages": messages,
                                "stream": wants_stream(body, default=True)}
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
            chat["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "format", "schema": body["format"]}}
        if body.get("tools"):
            chat["tools"] = body["tools"]
        if chat["stream"]:
            chat["stream_options"] = {"include_usage": True}
        return chat

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        return self._final(rendering, answer.text, answer.finish, answer.usage, answer.tool_calls, answer.extra)

    async def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
                     first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """A line per piece of text (the first with ``first_extra``), tool calls whole once they are
        complete, and the ``done`` line."""
        extra = dict(first_extra)
        calls: dict[int, list[str]] = {}
        async for piece in pieces:
            if isinstance(piece, TextPiece):
                yield _ndjson(self.line(rendering.model, piece.text, **extra))
                extra = {}
            elif isinstance(piece, ToolCallPiece):
                call = calls.setdefault(piece.index, ["", ""])
                call[0] += piece.name or ""
                call[1] += piece.arguments
            elif isinstance(piece, End):
                done = tuple(ToolCall("", *calls[i]) for i in sorted(calls))
                yield _ndjson(self._final(rendering, "", piece.finish, piece.usage, done, {**extra, **piece.extra}))
            elif isinstance(piece, Failed):
                yield self.failed_event(piece.error, rendering)
                return

    def error_body(self, err: ApiError) -> dict[str, Any]:
        return {"error": err.message}

    def failed_event(self, err: ApiError, rendering: Rendering) -> bytes:
        return _ndjson(self.error_body(err))  # Ollama's mid-stream error: a line holding "error"

    def edit_assistant_texts(self, body: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
        if self.kind == "generate":
            return body
        messages = edit_texts(body["messages"], edit, lambda part: False, lambda m: m.get("role") == "assistant")
        return body if messages is None else {**body, "messages": messages}

    def line(self, model: str, text: str, *, done: bool = False, calls: tuple[ToolCall, ...] = (),
             **extra: Any) -> dict[str, Any]:
        """One Ollama answer object: a piece of a stream, or (``done``) the last or only one."""
        out: dict[str, Any] = {"model": model, "created_at": datetime.now(timezone.utc).isoformat()}
        if self.kind == "chat":
            tool_calls = [{"function": {"name": c.name, "arguments": c.arguments_object()}} for c in calls]
            out["message"] = {"role": "assistant", "content": text, **({"tool_calls": tool_calls} if calls else {})}
        else:
            out["response"] = text
        out["done"] = done
        return {**out, **extra}

    def _final(self, rendering: Rendering, text: str, finish: str, usage: Usage | None, calls: tuple[ToolCall, ...],
               extra: Mapping[str, Any]) -> dict[str, Any]:
        """The ``done`` object: the finish reason, the token counts where known, the time taken (ns)."""
        counts = {"prompt_eval_count": usage.input_tokens, "eval_count": usage.output_tokens} if usage else {}
        return self.line(rendering.model, text, done=True, calls=calls,
                         done_reason="length" if finish == "length" else "stop",
                         total_duration=int((time.monotonic() - rendering.started) * 1e9), **counts, **extra)


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
