"""BPO as an OpenAI model: results rendered as chat and text completions, whole or as SSE chunks.

The content is exactly what ``bpo-local optimize`` prints: the rewrite, or the candidates separated
by a ``---`` line. Streams send only text no later token can change (see ``settled``), and the rest
when the result is ready, so the chunks add up to the same content.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from ..optimizer import OptimizeResult
from ..presets import Preset
from .owner import Ticket

Kind = Literal["chat", "text"]
DONE = b"data: [DONE]\n\n"
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_MAX_HELD_BYTES = 1 << 20
"""How much of an upstream stream is held while looking for its first event (then passed on as is)."""


def content(result: OptimizeResult) -> str:
    from ..optimizer import format_candidates

    return format_candidates(result.candidates)


def finish_reason(result: OptimizeResult) -> str:
    return "length" if "length" in result.finish_reasons else "stop"


def usage(result: OptimizeResult) -> dict[str, int]:
    t = result.timings
    return {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.generated_tokens,
            "total_tokens": t.prompt_tokens + t.generated_tokens}


def completion(kind: Kind, result: OptimizeResult) -> dict[str, Any]:
    """The whole answer: a ``chat.completion`` or a ``text_completion``, plus BPO's own ``bpo`` record."""
    text = content(result)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason(result)}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice.update(text=text, logprobs=None)
    return {**_head(kind, result.model), "choices": [choice], "usage": usage(result), "bpo": result.to_dict()}


async def chunks(kind: Kind, ticket: Ticket, model: str) -> AsyncIterator[bytes]:
    """SSE events for ``ticket``: the first candidate's settled text as it grows, then the rest, a final
    chunk with the finish reason, usage and the ``bpo`` record, and ``data: [DONE]``. Leaving early
    cancels the ticket."""
    head = _head(kind, model)
    if kind == "chat":
        yield _event(head, {"role": "assistant", "content": ""}, None, kind)
    async for piece in pieces(ticket):
        yield _event(head, piece, None, kind)
    result = await ticket.result()
    yield _event(head, "", finish_reason(result), kind, usage=usage(result), bpo=result.to_dict())
    yield DONE


async def pieces(ticket: Ticket) -> AsyncIterator[str]:
    """The content of ``ticket``'s result piece by piece: the first candidate's settled text as it
    grows, then the rest once the result is ready. An appending preset's candidate opens with the prompt,
    sent at once; the separator goes with the supplement's first settled text (an empty supplement leaves
    the prompt alone). Leaving early cancels the ticket."""
    preset = ticket.preset
    sent = ticket.prompt if preset.use == "append" else ""
    if sent:
        yield sent
    raw = ""
    async for delta in ticket.deltas():
        if delta.index != 0:
            continue
        raw += delta.text
        now = settled(raw, preset)
        if now and preset.use == "append":
            now = ticket.prompt + preset.separator + now
        if len(now) > len(sent):
            yield now[len(sent):]
            sent = now
    rest = content(await ticket.result())[len(sent):]
    if rest:
        yield rest


def settled(raw: str, preset: Preset) -> str:
    """The longest prefix of ``postprocess(raw, preset)`` that no text generated after ``raw`` can change.

    ``postprocess`` ends the text at the preset's end marker, cuts at its cut markers, deletes its
    ``delete`` texts and strips; text that could still become the start of a marker or of a deleted text,
    a deleted text that would straddle the end, and trailing whitespace, are held back.
    """
    markers = (*([preset.end_marker] if preset.end_marker else []), *preset.cut_markers)
    hold = max((len(m) for m in (*markers, *preset.delete)), default=1) - 1
    found = [raw.find(m) for m in markers if m in raw]
    full = raw[:min(found)] if found else raw
    text = full[:max(0, len(raw) - hold)]
    for unwanted in preset.delete:
        text = _before_straddling(text, full, unwanted)
        text, full = text.replace(unwanted, ""), full.replace(unwanted, "")
    return text.strip()


def _before_straddling(text: str, full: str, unwanted: str) -> str:
    """``text`` (a prefix of ``full``) ended before any occurrence of ``unwanted`` in ``full`` that crosses
    its end, so that deleting ``unwanted`` from both keeps one a prefix of the other."""
    start = full.find(unwanted)
    while 0 <= start < len(text):
        if start + len(unwanted) > len(text):
            return text[:start]
        start = full.find(unwanted, start + len(unwanted))
    return text


def _head(kind: Kind, model: str) -> dict[str, Any]:
    prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": model}


def _event(head: dict[str, Any], delta: Any, finish: str | None, kind: Kind, **extra: Any) -> bytes:
    if kind == "chat":
        obj = "chat.completion.chunk"
        choice = {"index": 0, "delta": delta if isinstance(delta, dict) else ({"content": delta} if delta else {}),
                  "finish_reason": finish}
    else:
        obj = "text_completion"
        choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
    chunk = {**head, "object": obj, "choices": [choice], **extra}
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def with_record(chunks: AsyncIterator[bytes], record: dict[str, Any]) -> AsyncIterator[bytes]:
    """An upstream's SSE stream with ``record`` added as ``"bpo"`` to its first JSON ``data:`` event;
    every other byte is passed on as it came, chunk by chunk."""
    held = b""
    async for chunk in chunks:
        ready, held, found = _annotate_first(held + chunk, record)
        if ready:
            yield ready
        if found or len(held) > _MAX_HELD_BYTES:
            break
    if held:
        yield held
    async for chunk in chunks:  # the rest as it comes
        yield chunk


def _annotate_first(data: bytes, record: dict[str, Any]) -> tuple[bytes, bytes, bool]:
    """``(bytes to send, bytes still held, found)``: the complete events up to the first JSON one,
    which gets ``record``, go out; without one, every complete event goes out as it is."""
    sent = 0
    while match := _EVENT_END.search(data, sent):
        event = data[sent:match.start()]
        payload = event[5:].strip() if event.startswith(b"data:") else b""
        try:
            chunk = json.loads(payload) if payload else None
        except ValueError:
            chunk = None
        if isinstance(chunk, dict):
            chunk["bpo"] = record
            line = b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8")
            return data[:sent] + line + data[match.start():match.end()], data[match.end():], True
        sent = match.end()
    return data[:sent], data[sent:], False
