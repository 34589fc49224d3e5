"""What every API's dialect does: read a request as a conversation, put rewritten texts back in it,
translate it to OpenAI chat completions, render answers, streams and errors in its own shape."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ... import sse
from ..answer import Answer, Piece
from ..errors import ApiError
from ..turns import Turn


@dataclass(frozen=True)
class Conversation:
    """A request as BPO sees it: its turns, the model it names, whether it streams, and whether earlier
    turns live upstream out of sight (Responses' ``previous_response_id``)."""

    turns: tuple[Turn, ...]
    model: Any = None
    stream: bool = False
    continues: bool = False

    def last_user_text(self, required: bool = True) -> str | None:
        """The last user turn's text: what BPO answers when it is the model itself (None where there is none
        and it is not ``required``; else a 400)."""
        for turn in reversed(self.turns):
            if turn.role == "user":
                if turn.text is None and required:
                    raise ApiError(400, "the last user message has no text content", code="invalid_value")
                return turn.text
        if not required:
            return None
        raise ApiError(400, "messages hold no user message to optimize", code="invalid_value")


@dataclass
class Rendering:
    """What a dialect needs to render one answer: the model to name and when the request arrived."""

    model: str
    started: float = field(default_factory=time.monotonic)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """One id for the answer, whichever of its events names it."""


class Dialect:
    """One API's wire format. ``native_path`` is its route under an upstream's base URL where the upstream
    speaks it (None: it always goes upstream as chat completions); ``key_header`` carries the operator's key to it."""

    native_path: ClassVar[str | None] = None
    key_header: ClassVar[str] = "authorization"
    media_type: ClassVar[str] = sse.MEDIA_TYPE
    caps_max_tokens: ClassVar[bool] = False
    """Whether a request's token limit is a budget (Anthropic's required ``max_tokens``): BPO answering as the model
    takes at most its own limit instead of refusing a larger one."""

    def conversation(self, body: dict[str, Any]) -> Conversation:
        raise NotImplementedError

    def with_texts(self, body: dict[str, Any], texts: Mapping[int, str],
                   kept: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
        """``body`` with the user turns at these indexes (of ``conversation(body).turns``) holding these texts;
        ``kept``: how many characters at the start and at the end of a text are an app's own, as they came."""
        raise NotImplementedError

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request as an OpenAI chat completions body (for an upstream without this API, and for the
        sampling settings BPO takes when it answers itself)."""
        raise NotImplementedError

    def answer(self, answer: Answer, rendering: Rendering) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, pieces: AsyncIterator[Piece], rendering: Rendering,
               first_extra: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """The answer's stream; ``first_extra`` joins its first event, each piece's ``End.extra`` its last."""
        raise NotImplementedError

    def error_body(self, err: ApiError) -> dict[str, Any]:
        raise NotImplementedError

    def failed_event(self, err: ApiError, rendering: Rendering) -> bytes:
        """The API's own event that ends a stream already answering as failed (an SDK raises it)."""
        raise NotImplementedError

    def read_stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Piece]:
        """An upstream's stream in this API, as pieces ending in one End at its last event (then the upstream is
        closed); an error event of its own raises (``errors.failed_midway``), and so does an end before the last
        event (``errors.ended_early``)."""
        raise NotImplementedError

    def with_prefix(self, whole: dict[str, Any], text: str) -> dict[str, Any]:
        """An upstream's whole answer in this API with ``text`` before its text."""
        raise NotImplementedError

    def edit_assistant_texts(self, body: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
        """``body`` with ``edit`` applied to the assistant's earlier texts (the same object where none changed)."""
        raise NotImplementedError


def wants_stream(body: dict[str, Any], default: bool = False) -> bool:
    stream = body.get("stream", default)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}", code="invalid_value")
    return stream


def content_text(content: Any, is_text: Callable[[Any], bool]) -> str | None:
    """A message's text: its content as a string, or its text parts joined by newlines; None where it has none."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = [p.get("text") for p in content if is_text(p)]
    return "\n".join(texts) if texts and all(isinstance(t, str) for t in texts) else None


def has_media(content: Any, is_text: Callable[[Any], bool]) -> bool:
    """Whether a message's content holds a part that is not text (an image, a file)."""
    return isinstance(content, list) and any(not is_text(part) for part in content)


def with_text(message: dict[str, Any], text: str, is_text: Callable[[Any], bool], part_type: str,
              kept: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """``message`` holding ``text``: string content replaced. In a list of parts (read as ``content_text`` joins
    them), only the text parts the change touches are edited, into one of ``part_type`` where the first stood:
    parts it leaves as they were (an app's own blocks around the person's, with their fields: ``kept`` counts the
    characters of those at the start and the end, which the change never enters) and other parts (images, files)
    keep their places."""
    content = message.get("content")
    if not isinstance(content, list):
        return {**message, "content": text}
    at = [i for i, part in enumerate(content) if is_text(part)]
    if not at:
        return {**message, "content": [{"type": part_type, "text": text}, *content]}
    olds = [content[i].get("text") or "" for i in at]
    old = "\n".join(olds)
    if old == text:
        return message
    same_start, change_end, same_end = _change(old, text, kept)
    starts = [0, *itertools.accumulate(len(t) + 1 for t in olds[:-1])]
    inserted = change_end == same_start
    touched = [k for k, start in enumerate(starts)  # the parts the change overlaps (the first that holds an insertion)
               if (start <= same_start <= start + len(olds[k]) if inserted
                   else start < change_end and start + len(olds[k]) > same_start)][:1 if inserted else None]
    if not touched:  # the change is in the newlines between parts alone: it goes with the part after it
        touched = [next(k for k, start in enumerate(starts) if start >= same_start)]
    first, last = touched[0], touched[-1]
    edited = (olds[first][:max(0, same_start - starts[first])] + text[same_start:len(text) - same_end]
              + olds[last][max(0, change_end - starts[last]):])
    parts = list(content)
    parts[at[first]] = {**content[at[first]], "type": part_type, "text": edited}
    dropped = {at[k] for k in touched[1:]} | ({at[first]} if not edited else set())
    return {**message, "content": [part for i, part in enumerate(parts) if i not in dropped]}


def _change(old: str, new: str, kept: tuple[int, int]) -> tuple[int, int, int]:
    """Where ``new`` differs from ``old``: the length they share at the start, where the changed part of ``old``
    ends, and the length they share at the end; the first ``kept[0]`` and last ``kept[1]`` characters never change."""
    same_start = min(len(os.path.commonprefix([old, new])), len(old) - kept[1])
    same_end = min(len(os.path.commonprefix([old[::-1], new[::-1]])), len(old) - same_start, len(new) - same_start,
                   len(old) - kept[0])
    return same_start, len(old) - same_end, same_end


def edit_texts(messages: list[Any], edit: Callable[[str], str], is_text: Callable[[Any], bool],
               is_assistant: Callable[[Any], bool]) -> list[Any] | None:
    """``messages`` with ``edit`` applied to the assistant messages' texts (string content or text parts); None
    where it changed none."""
    changed = False
    out: list[Any] = []
    for message in messages:
        if isinstance(message, dict) and is_assistant(message):
            content = message.get("content")
            if isinstance(content, str) and (new := edit(content)) != content:
                message, changed = {**message, "content": new}, True
            elif isinstance(content, list):
                parts = [{**p, "text": edit(p["text"])} if is_text(p) and isinstance(p.get("text"), str) else p
                         for p in content]
                if parts != content:
                    message, changed = {**message, "content": parts}, True
        out.append(message)
    return out if changed else None


def object_list(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``body[key]``: a non-empty list of objects (400 otherwise)."""
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise ApiError(400, f"missing {key}: give \"{key}\" as a non-empty list", code=f"missing_{key}")
    if not all(isinstance(item, dict) for item in items):
        raise ApiError(400, f"{key} must be a list of objects", code="invalid_value")
    return items
