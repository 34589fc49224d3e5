"""OpenAI's Responses API (``/v1/responses``): what Codex and the Agents SDK speak.

``input`` is a string or a list of items (messages with content parts, function calls and their
outputs); ``instructions`` is the system turn; ``previous_response_id`` means the conversation so far
lives upstream, so the new input is a follow-up. Answers and streams are rendered with Responses' own
event types; for an upstream without the API the request is translated to chat completions.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ... import sse
from ..answer import Answer, End, Failed, Finish, Piece, TextPiece, ToolCall, ToolCallPiece, Usage
from ..errors import ApiError, ended_early, failed_midway
from ..turns import Turn
from .base import Conversation, Dialect, Rendering, content_text, edit_texts, has_media, wants_stream, with_text

_TEXT_PARTS = ("input_text", "output_text", "text")
_ROLES = {"developer": "system"}
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "max_output_tokens": "max_tokens",
             "parallel_tool_calls": "parallel_tool_calls", "user": "user", "top_k": "top_k", "seed": "seed",
             "mode": "mode", "n": "n"}
"""Responses field -> chat completions field (``mode``, ``top_k``, ``seed`` and ``n`` are BPO's and servers' extras)."""


def _is_text(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in _TEXT_PARTS


def _items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "missing input: give \"input\" as a string or a non-empty list of items",
                       code="missing_input")
    return value


def _turn(item: Any) -> Turn:
    if not isinstance(item, dict):
        return Turn("unknown")
    kind = item.get("type", "message")
    if kind == "function_call_output":
        return Turn("tool")
    if kind != "message":
        return Turn("assistant" if kind in ("function_call", "reasoning") else str(kind))
    role = _ROLES.get(str(item.get("role")), str(item.get("role")))
    if role == "system":
        return Turn(role, content_text(item.get("content"), _is_text))
    if role != "user":
        return Turn(role)
    content = item.get("content")
    return Turn(role, content_text(content, _is_text), has_media(content, _is_text))


class Responses(Dialect):
    native_path = "/responses"
    caps_max_tokens = True

    def conversation(self, body: dict[str, Any]) -> Conversation:
        turns = tuple(_turn(item) for item in _items(body))
        if isinstance(body.get("instructions"), str):
            turns = (Turn("system", body["instructions"]), *turns)
        return Conversation(turns, body.get("model"), wants_stream(body),
                            continues=body.get("previous_response_id") is not None)

    def with_texts(self, body: dict[str, Any], texts: Mapping[int, str],
                   kept: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        if not texts:
            return body
        shift = 1 if isinstance(body.get("instructions"), str) else 0
        if isinstance(body.get("input"), str):
            return {**body, "input": texts[shift]}
        kept = kept or {}
        items = [with_text(item, texts[i + shift], _is_text, "input_text", kept.get(i + shift, (0, 0)))
                 if i + shift in texts else item for i, item in enumerate(body["input"])]
        return {**body, "input": items}

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("previous_response_id") is not None:
            raise ApiError(400, "previous_response_id needs an upstream that keeps responses, and this upstream has "
                           "no Responses API; send the whole conversation in input", code="unsupported_value")
        messages: list[dict[str, Any]] = []
        if isinstance(body.get("instructions"), str):
            messages.append({"role": "system", "content": body["instructions"]})
        for item in _items(body):
            _append_message(messages, item)
        chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": wants_stream(body)}
        chat.update({field: body[key] for key, field in _SAMPLING.items() if body.get(key) is not None})
        if body.get("tools"):
            chat["tools"] = [_chat_tool(tool) for tool in body["tools"]]
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
        text = body.get("text") or {}
        if not isinstance(text, dict):
            raise ApiError(400, f"text must be an object, got {text!r}", code="invalid_value")
        response_format = _chat_format(text.get("format"))
        if response_format:
            chat["response_format"] = response_format
        if chat["stream"]:
            chat["stream_options"] = {"include_usage": True}
        return chat

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        items = []
        if answer.text or not answer.tool_calls:
            items.append(_message_item(_id("msg"), answer.text, "completed"))
        items.extend(_call_item(_id("fc"), call, "completed") for call in answer.tool_calls)
        return {**_response(rendering, answer.finish, items, answer.usage), **answer.extra}

    async def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
                     first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        events = _EventWriter()
        yield events.send("response.created", response=_response(rendering, None, [], None), **first_extra)
        yield events.send("response.in_progress", response=_response(rendering, None, [], None))
        text_id, text = _id("msg"), ""
        items: list[dict[str, Any]] = []
        calls: dict[int, tuple[int, dict[str, Any]]] = {}
        async for piece in pieces:
            if isinstance(piece, TextPiece):
                if not text:
                    items.append(_message_item(text_id, "", "in_progress"))
                    yield events.send("response.output_item.added", output_index=len(items) - 1,
                                      item=_message_item(text_id, "", "in_progress", parts=False))
                    yield events.send("response.content_part.added", item_id=text_id, output_index=len(items) - 1,
                                      content_index=0, part=_text_part(""))
                text += piece.text
                yield events.send("response.output_text.delta", item_id=text_id, output_index=_index(items, text_id),
                                  content_index=0, delta=piece.text, logprobs=[])
            elif isinstance(piece, ToolCallPiece):
                if piece.index not in calls:
                    call = _call_item(_id("fc"), ToolCall(piece.id or _id("call"), piece.name or "", ""), "in_progress")
                    items.append(call)
                    calls[piece.index] = (len(items) - 1, call)
                    yield events.send("response.output_item.added", output_index=len(items) - 1, item=dict(call))
                at, call = calls[piece.index]
                if piece.arguments:
                    call["arguments"] += piece.arguments
                    yield events.send("response.function_call_arguments.delta", item_id=call["id"], output_index=at,
                                      delta=piece.arguments)
            elif isinstance(piece, End):
                for at, item in enumerate(items):
                    item["status"] = "completed"
                    if item["type"] == "message":
                        item["content"] = [_text_part(text)]
                        yield events.send("response.output_text.done", item_id=text_id, output_index=at,
                                          content_index=0, text=text, logprobs=[])
                        yield events.send("response.content_part.done", item_id=text_id, output_index=at,
                                          content_index=0, part=_text_part(text))
                    else:
                        yield events.send("response.function_call_arguments.done", item_id=item["id"],
                                          output_index=at, arguments=item["arguments"])
                    yield events.send("response.output_item.done", output_index=at, item=item)
                done = _response(rendering, piece.finish, items, piece.usage)
                kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
                yield events.send(kind, response=done, **piece.extra)
            elif isinstance(piece, Failed):
                for item in items:
                    if item["type"] == "message":
                        item["content"] = [_text_part(text)]  # what was streamed stays in the failed response
                yield events.send("response.failed", response=_failed(rendering, items, piece.error))
                return

    def error_body(self, err: ApiError) -> dict[str, Any]:
        return {"error": {"message": err.message, "type": err.type, "code": err.code, "param": None}}

    def failed_event(self, err: ApiError, rendering: Rendering) -> bytes:
        """``response.failed`` with no output: a passed-on stream's own items are its upstream's, unknown here."""
        return sse.encode({"type": "response.failed", "response": _failed(rendering, [], err)}, "response.failed")

    async def read_stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Piece]:
        finish: Finish = "stop"
        usage: Usage | None = None
        streamed: set[int] = set()
        """The function calls whose arguments came in pieces (the others come whole, with their ``.done``)."""
        async with contextlib.aclosing(sse.aevents(chunks)) as events:  # a break closes the upstream
            async for event in events:
                data = event.json_object() or {}
                kind, at = data.get("type"), data.get("output_index", 0)
                if kind == "response.output_text.delta" and data.get("delta"):
                    yield TextPiece(data["delta"])
                elif kind == "response.output_item.added" and (data.get("item") or {}).get("type") == "function_call":
                    item = data["item"]
                    yield ToolCallPiece(at, item.get("call_id"), item.get("name"), item.get("arguments") or "")
                    streamed.update([at] if item.get("arguments") else [])
                elif kind == "response.function_call_arguments.delta":
                    streamed.add(at)
                    yield ToolCallPiece(at, arguments=data.get("delta") or "")
                elif kind == "response.function_call_arguments.done" and at not in streamed:
                    yield ToolCallPiece(at, arguments=data.get("arguments") or "")
                elif kind == "response.failed":
                    raise failed_midway((data.get("response") or {}).get("error"))
                elif kind == "error":
                    raise failed_midway(data)
                elif kind in ("response.completed", "response.incomplete"):
                    response = data.get("response") or {}
                    calls = any(item.get("type") == "function_call" for item in response.get("output") or [])
                    finish = "length" if kind == "response.incomplete" else "tool_calls" if calls else "stop"
                    counted = response.get("usage") or {}
                    usage = Usage(counted.get("input_tokens") or 0, counted.get("output_tokens") or 0)
                    break
            else:
                raise ended_early()
        yield End(finish, usage)

    def with_prefix(self, whole: dict[str, Any], text: str) -> dict[str, Any]:
        output = list(whole.get("output") or [])
        for at, item in enumerate(output):
            parts = item.get("content") if item.get("type") == "message" else None
            if parts and parts[0].get("type") == "output_text":
                output[at] = {**item, "content": [{**parts[0], "text": text + parts[0].get("text", "")}, *parts[1:]]}
                return {**whole, "output": output}
        return {**whole, "output": [_message_item(_id("msg"), text, "completed"), *output]}

    def edit_assistant_texts(self, body: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
        if not isinstance(body.get("input"), list):
            return body
        items = edit_texts(body["input"], edit, _is_text,
                           lambda item: item.get("type", "message") == "message" and item.get("role") == "assistant")
        return body if items is None else {**body, "input": items}


def _failed(rendering: Rendering, items: list[dict[str, Any]], err: ApiError) -> dict[str, Any]:
    """The response that failed midway, holding ``items`` (what was streamed of it)."""
    return {**_response(rendering, None, items, None), "status": "failed",
            "error": {"code": err.code or err.type, "message": err.message}}


class _EventWriter:
    """Responses' events, numbered in the order they are sent."""

    def __init__(self) -> None:
        self._sequence = 0

    def send(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse.encode(event, kind)


def _append_message(messages: list[dict[str, Any]], item: Any) -> None:
    """One input item as chat messages: consecutive function calls join one assistant message."""
    if not isinstance(item, dict):
        raise ApiError(400, "input items must be objects", code="invalid_value")
    kind = item.get("type", "message")
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
        if messages and messages[-1].get("role") == "assistant" and "tool_calls" in messages[-1]:
            messages[-1]["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": output if isinstance(output, str) else json.dumps(output)})
    elif kind == "message":
        role = _ROLES.get(str(item.get("role")), item.get("role"))
        messages.append({"role": role, "content": _chat_content(item.get("content"), role)})
    elif kind != "reasoning":  # a reasoning item is the upstream's own; chat completions have no place for it
        raise ApiError(400, f"input items of type {kind!r} cannot go to an upstream without a Responses API",
                       code="unsupported_value")


def _chat_content(content: Any, role: Any) -> Any:
    if not isinstance(content, list):
        return content
    if role != "user" or all(_is_text(p) for p in content):
        return content_text(content, _is_text) or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if _is_text(part):
            parts.append({"type": "text", "text": part.get("text")})
        elif isinstance(part, dict) and part.get("type") == "input_image":
            url = part.get("image_url") or ""
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
        else:
            raise ApiError(400, f"content of type {part.get('type') if isinstance(part, dict) else part!r} cannot go "
                           "to an upstream without a Responses API", code="unsupported_value")
    return parts


def _chat_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise ApiError(400, f"the tool {kind!r} is the Responses API's own; this upstream has no Responses API and "
                       "takes function tools only", code="unsupported_value")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _chat_format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str, parts: bool = True) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [_text_part(text)] if parts else []}


def _call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": status}


def _index(items: list[dict[str, Any]], item_id: str) -> int:
    return next(i for i, item in enumerate(items) if item["id"] == item_id)


def _response(rendering: Rendering, finish: str | None, output: list[dict[str, Any]],
              usage: Usage | None) -> dict[str, Any]:
    status = "in_progress" if finish is None else "incomplete" if finish == "length" else "completed"
    return {
        "id": f"resp_{rendering.id}", "object": "response",
        "created_at": int(time.time()), "status": status, "model": rendering.model, "output": output,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "error": None, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "metadata": {},
        "usage": None if usage is None else {
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}},
    }

