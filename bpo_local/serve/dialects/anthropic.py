"""Anthropic's Messages API (``/v1/messages``): what Claude Code speaks.

``system`` is top-level; content is a string or blocks (text, image, tool_use, tool_result); a user
message holding tool results is a tool round, never a new turn. The client's key comes as ``x-api-key``.
Answers, streams (Messages' event types) and errors (``{"type": "error", ...}``) are Anthropic's; for an
upstream without the API the request is translated to chat completions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ... import sse
from ..answer import Answer, End, Failed, Finish, Piece, TextPiece, ToolCallPiece, Usage
from ..errors import ApiError, ended_early, failed_midway
from ..turns import APP_ROLE, Turn
from .base import (Conversation, Dialect, Rendering, content_text, edit_texts, has_media, object_list, wants_stream,
                   with_text)

_STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_FINISHES: dict[Any, Finish] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                "tool_use": "tool_calls"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                529: "overloaded_error"}
_SAMPLING = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
             "stop_sequences": "stop", "mode": "mode", "seed": "seed", "n": "n"}
"""Messages field -> chat completions field (``mode``, ``seed`` and ``n`` are BPO's own extras)."""


def _is_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text"


def _turn(message: dict[str, Any]) -> Turn:
    role = str(message.get("role"))
    content = message.get("content")
    if role == "system":  # no role of the Messages API: Claude Code's reminders mid-conversation (2.1.337)
        return Turn(APP_ROLE)
    if role != "user":
        return Turn(role)
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return Turn("tool")
    return Turn(role, content_text(content, _is_text), has_media(content, _is_text))


class Anthropic(Dialect):
    native_path = "/messages"
    caps_max_tokens = True
    key_header = "x-api-key"

    def conversation(self, body: dict[str, Any]) -> Conversation:
        turns = tuple(_turn(m) for m in object_list(body, "messages"))
        if body.get("system"):
            turns = (Turn("system", content_text(body["system"], _is_text)), *turns)
        return Conversation(turns, body.get("model"), wants_stream(body))

    def with_texts(self, body: dict[str, Any], texts: Mapping[int, str],
                   kept: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        if not texts:
            return body
        shift = 1 if body.get("system") else 0
        kept = kept or {}
        messages = [with_text(m, texts[i + shift], _is_text, "text", kept.get(i + shift, (0, 0)))
                    if i + shift in texts else m for i, m in enumerate(body["messages"])]
        return {**body, "messages": messages}

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        system = content_text(body.get("system"), _is_text)
        if system:
            messages.append({"role": "system", "content": system})
        for message in object_list(body, "messages"):
            messages.extend(_chat_messages(message))
        chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": wants_stream(body)}
        chat.update({field: body[key] for key, field in _SAMPLING.items() if body.get(key) is not None})
        if body.get("tools"):
            chat["tools"] = [{"type": "function", "function": {
                "name": t.get("name"), "description": t.get("description", ""),
                "parameters": t.get("input_schema") or {}}} for t in body["tools"] if isinstance(t, dict)]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            chat["tool_choice"] = ({"type": "function", "function": {"name": choice.get("name")}} if kind == "tool"
                                   else "required" if kind == "any" else kind)
        if chat["stream"]:
            chat["stream_options"] = {"include_usage": True}
        return chat

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] \
            if answer.text or not answer.tool_calls else []
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments_object()}
                    for c in answer.tool_calls]
        usage = answer.usage or Usage()
        return {**_message(rendering, content, usage), "stop_reason": _STOP_REASONS[answer.finish], **answer.extra}

    async def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
                     first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        yield _event("message_start", message=_message(rendering, [], Usage()), **first_extra)
        yield _event("ping")
        open_block: int | None = None
        blocks = 0
        text_block: int | None = None
        call_blocks: dict[int, int] = {}
        async for piece in pieces:
            if isinstance(piece, TextPiece):
                if text_block is None or open_block != text_block:
                    if open_block is not None:
                        yield _event("content_block_stop", index=open_block)
                    text_block = open_block = blocks
                    blocks += 1
                    yield _event("content_block_start", index=open_block, content_block={"type": "text", "text": ""})
                yield _event("content_block_delta", index=open_block, delta={"type": "text_delta", "text": piece.text})
            elif isinstance(piece, ToolCallPiece):
                if piece.index not in call_blocks:
                    if open_block is not None:
                        yield _event("content_block_stop", index=open_block)
                    call_blocks[piece.index] = open_block = blocks
                    blocks += 1
                    block = {"type": "tool_use", "id": piece.id or f"toolu_{rendering.id}_{piece.index}",
                             "name": piece.name or "", "input": {}}
                    yield _event("content_block_start", index=open_block, content_block=block)
                if piece.arguments:
                    yield _event("content_block_delta", index=call_blocks[piece.index],
                                 delta={"type": "input_json_delta", "partial_json": piece.arguments})
            elif isinstance(piece, End):
                if open_block is not None:
                    yield _event("content_block_stop", index=open_block)
                usage = piece.usage or Usage()
                yield _event("message_delta", delta={"stop_reason": _STOP_REASONS[piece.finish], "stop_sequence": None},
                             usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens})
                yield _event("message_stop", **piece.extra)
            elif isinstance(piece, Failed):
                yield self.failed_event(piece.error, rendering)
                return

    def error_body(self, err: ApiError) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": err.message}}

    def failed_event(self, err: ApiError, rendering: Rendering) -> bytes:
        return sse.encode(self.error_body(err), "error")  # Anthropic's mid-stream error event

    async def read_stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Piece]:
        finish: Finish = "stop"
        usage = Usage()
        async with contextlib.aclosing(sse.aevents(chunks)) as events:  # a break closes the upstream
            async for event in events:
                data = event.json_object() or {}
                kind = data.get("type")
                block = data.get("content_block") or {}
                delta = data.get("delta") or {}
                if kind == "error":
                    raise failed_midway(data.get("error"))
                if kind == "message_start":
                    counted = (data.get("message") or {}).get("usage") or {}
                    usage = Usage(counted.get("input_tokens") or 0, counted.get("output_tokens") or 0)
                elif kind == "content_block_start" and block.get("type") == "tool_use":
                    yield ToolCallPiece(data.get("index", 0), block.get("id"), block.get("name"))
                elif kind == "content_block_delta" and delta.get("type") == "text_delta":
                    yield TextPiece(delta.get("text") or "")
                elif kind == "content_block_delta" and delta.get("type") == "input_json_delta":
                    yield ToolCallPiece(data.get("index", 0), arguments=delta.get("partial_json") or "")
                elif kind == "message_delta":
                    finish = _FINISHES.get(delta.get("stop_reason"), "stop")
                    usage = Usage(usage.input_tokens, (data.get("usage") or {}).get("output_tokens") or 0)
                elif kind == "message_stop":
                    break
            else:
                raise ended_early()
        yield End(finish, usage)

    def with_prefix(self, whole: dict[str, Any], text: str) -> dict[str, Any]:
        content = list(whole.get("content") or [])
        if content and content[0].get("type") == "text":
            content[0] = {**content[0], "text": text + content[0].get("text", "")}
        else:
            content.insert(0, {"type": "text", "text": text})
        return {**whole, "content": content}

    def edit_assistant_texts(self, body: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
        messages = edit_texts(body["messages"], edit, _is_text, lambda m: m.get("role") == "assistant")
        return body if messages is None else {**body, "messages": messages}


def _chat_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Messages message as chat messages: tool results become tool messages (before the rest of the
    user's content), tool uses an assistant's tool calls."""
    role = message.get("role")
    content = message.get("content")
    if not isinstance(content, list):
        return [{"role": role, "content": content if isinstance(content, str) else ""}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {})}})
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result":
            text = content_text(block.get("content"), _is_text)
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text or ""})
    if role == "assistant":
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        out.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": role, "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return out


def _image_url(source: dict[str, Any]) -> str:
    if source.get("type") == "url":
        return str(source.get("url"))
    return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"


def _message(rendering: Rendering, content: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
    return {"id": f"msg_{rendering.id}", "type": "message", "role": "assistant", "model": rendering.model,
            "content": content, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}


def _event(kind: str, **fields: Any) -> bytes:
    return sse.encode({"type": kind, **fields}, kind)
