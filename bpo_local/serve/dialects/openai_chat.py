"""OpenAI chat completions (``/v1/chat/completions``), and text completions for BPO's own answers.

Also the reader of an upstream's chat answers, whole or streamed, for the dialects that go upstream as
chat completions (Ollama's, and Responses or Messages where the upstream lacks them).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

from ... import sse
from ..answer import Answer, End, Failed, Piece, TextPiece, ToolCall, ToolCallPiece, Usage, finish_of
from ..errors import ApiError, ended_early, failed_midway
from ..turns import Turn
from .base import Conversation, Dialect, Rendering, content_text, edit_texts, has_media, wants_stream, with_text


def _is_text(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text"


def message_turn(message: Any) -> Turn:
    """An OpenAI chat message as a turn: a user message's text parts joined (None where it has none)."""
    if not isinstance(message, dict):
        return Turn("unknown")
    role = message.get("role")
    role = role if isinstance(role, str) else "unknown"
    if role in ("system", "developer"):
        return Turn("system", content_text(message.get("content"), _is_text))
    if role != "user":
        return Turn(role)
    content = message.get("content")
    return Turn(role, content_text(content, _is_text), has_media(content, _is_text))


def usage_of(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def _usage_body(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens}


class OpenAIChat(Dialect):
    native_path = "/chat/completions"

    def conversation(self, body: dict[str, Any]) -> Conversation:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "missing messages: give \"messages\" as a non-empty list", code="missing_messages")
        return Conversation(tuple(message_turn(m) for m in messages), body.get("model"), wants_stream(body))

    def with_texts(self, body: dict[str, Any], texts: Mapping[int, str],
                   kept: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        if not texts:
            return body
        kept = kept or {}
        messages = [with_text(m, texts[i], _is_text, "text", kept.get(i, (0, 0))) if i in texts else m
                    for i, m in enumerate(body["messages"])]
        return {**body, "messages": messages}

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
            return {**body, "max_tokens": body["max_completion_tokens"]}
        return body

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in answer.tool_calls]
        usage = _usage_body(answer.usage)
        return {**_head("chat.completion", rendering.model),
                "choices": [{"index": 0, "finish_reason": answer.finish, "message": message}],
                **({"usage": usage} if usage else {}), **answer.extra}

    async def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
                     first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        head = _head("chat.completion.chunk", rendering.model)
        yield _chunk(head, {"role": "assistant", "content": ""}, None, **first_extra)
        async for piece in pieces:
            if isinstance(piece, TextPiece):
                yield _chunk(head, {"content": piece.text}, None)
            elif isinstance(piece, ToolCallPiece):
                call: dict[str, Any] = {"index": piece.index, "function": {"arguments": piece.arguments}}
                if piece.id is not None:
                    call.update(id=piece.id, type="function")
                    call["function"]["name"] = piece.name or ""
                yield _chunk(head, {"tool_calls": [call]}, None)
            elif isinstance(piece, Failed):
                yield self.failed_event(piece.error, rendering)
                return
            else:
                usage = _usage_body(piece.usage)
                yield _chunk(head, {}, piece.finish, **({"usage": usage} if usage else {}), **piece.extra)
        yield sse.encode(sse.DONE)

    def error_body(self, err: ApiError) -> dict[str, Any]:
        return {"error": {"message": err.message, "type": err.type, "code": err.code}}

    def failed_event(self, err: ApiError, rendering: Rendering) -> bytes:
        return sse.encode(self.error_body(err))  # OpenAI's: an event holding "error", and no [DONE] after it

    def read_stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Piece]:
        return read_stream(chunks)

    def with_prefix(self, whole: dict[str, Any], text: str) -> dict[str, Any]:
        choices = whole.get("choices") or [{}]
        message = choices[0].get("message") or {}
        first = {**choices[0], "message": {**message, "content": text + (message.get("content") or "")}}
        return {**whole, "choices": [first, *choices[1:]]}

    def edit_assistant_texts(self, body: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
        messages = edit_texts(body["messages"], edit, _is_text, lambda m: m.get("role") == "assistant")
        return body if messages is None else {**body, "messages": messages}


class OpenAIText(OpenAIChat):
    """Text completions (``/v1/completions``): BPO answering ``{"prompt"}`` itself."""

    native_path: ClassVar[str | None] = None

    def conversation(self, body: dict[str, Any]) -> Conversation:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "missing prompt: give \"prompt\" as a string", code="missing_prompt")
        return Conversation((Turn("user", prompt),), body.get("model"), wants_stream(body))

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        usage = _usage_body(answer.usage)
        return {**_head("text_completion", rendering.model),
                "choices": [{"index": 0, "finish_reason": answer.finish, "text": answer.text, "logprobs": None}],
                **({"usage": usage} if usage else {}), **answer.extra}

    async def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
                     first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        head = _head("text_completion", rendering.model, prefix="cmpl")
        extra = dict(first_extra)
        async for piece in pieces:
            if isinstance(piece, TextPiece):
                yield _text_chunk(head, piece.text, None, **extra)
                extra = {}
            elif isinstance(piece, End):
                usage = _usage_body(piece.usage)
                yield _text_chunk(head, "", piece.finish, **extra, **({"usage": usage} if usage else {}),
                                  **piece.extra)
            elif isinstance(piece, Failed):
                yield self.failed_event(piece.error, rendering)
                return
        yield sse.encode(sse.DONE)


def read_answer(obj: dict[str, Any], extra: Mapping[str, Any]) -> Answer:
    """An upstream's whole chat completion."""
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = tuple(ToolCall(c.get("id") or f"call_{uuid.uuid4().hex[:24]}", (c.get("function") or {}).get("name") or "",
                           (c.get("function") or {}).get("arguments") or "")
                  for c in message.get("tool_calls") or [] if isinstance(c, dict))
    finish = finish_of(choice.get("finish_reason"))
    return Answer(str(obj.get("model") or ""), message.get("content") or "", finish, usage_of(obj.get("usage")),
                  calls, dict(extra))


async def read_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[Piece]:
    """An upstream's streamed chat completion as pieces, ending in one End at its ``[DONE]`` (its error event, or
    an end with neither ``[DONE]`` nor a finish reason, raises)."""
    finish: Any = None
    usage: Usage | None = None
    async with contextlib.aclosing(sse.aevents(chunks)) as events:  # a break closes the upstream
        async for event in events:
            if event.data == sse.DONE:
                break
            chunk = event.json_object()
            if chunk is None:
                continue
            if chunk.get("error"):
                raise failed_midway(chunk["error"])
            usage = usage_of(chunk.get("usage")) or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextPiece(delta["content"])
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") or {}
                    yield ToolCallPiece(call.get("index", 0), call.get("id"), function.get("name"),
                                        function.get("arguments") or "")
                finish = choice.get("finish_reason") or finish
        else:
            if finish is None:
                raise ended_early()
    yield End(finish_of(finish), usage)


def _head(obj: str, model: str, prefix: str = "chatcmpl") -> dict[str, Any]:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": model}


def _chunk(head: dict[str, Any], delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
    return sse.encode({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


def _text_chunk(head: dict[str, Any], text: str, finish: str | None, **extra: Any) -> bytes:
    return sse.encode({**head, "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                       **extra})
