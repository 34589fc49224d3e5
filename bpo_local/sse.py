"""Server-sent events: the package's one reader and writer.

Read: feed bytes as they come, in pieces of any size, and get whole events (``event:`` name, ``data:``
lines joined, comments skipped). Write: ``encode`` one event. ``with_first_json`` edits a stream's first
JSON event in passing and leaves every other byte as it came.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"
"""The ``data:`` of OpenAI's last chat event."""
EVENT_END = re.compile(rb"\r?\n\r?\n")
MEDIA_TYPE = "text/event-stream"
_MAX_HELD_BYTES = 1 << 20
"""How much of a stream ``with_first_json`` holds while looking for its first event (then passed on as is)."""


@dataclass(frozen=True)
class Event:
    """One event: its ``data`` (lines joined by newlines) and its ``event:`` name, if it has one."""

    data: str
    name: str | None = None

    def json_object(self) -> dict[str, Any] | None:
        """The data as a JSON object, or None (``[DONE]``, not JSON, not an object)."""
        try:
            value = json.loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def parse(raw: bytes) -> Event | None:
    """The event in ``raw`` (one event's bytes, without its blank line); None for a comment or nothing."""
    name: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return Event("\n".join(data), name) if data or name else None


class Decoder:
    """Whole events out of bytes fed in pieces of any size."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._held += chunk
        events: list[Event] = []
        while match := EVENT_END.search(self._held):
            raw, self._held = self._held[:match.start()], self._held[match.end():]
            if (event := parse(raw)) is not None:
                events.append(event)
        return events

    def end(self) -> list[Event]:
        """The last event, where the stream ended without its blank line."""
        raw, self._held = self._held, b""
        event = parse(raw) if raw.strip() else None
        return [event] if event is not None else []


def events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """The events of a stream read in chunks."""
    decoder = Decoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.end()


async def aevents(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """The events of a stream read in chunks, as they complete; closing it (``contextlib.aclosing``) early closes
    the stream too."""
    decoder = Decoder()
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.end():
            yield event
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def encode(data: Any, name: str | None = None) -> bytes:
    """One event: ``data`` as JSON (a string as it is), with an ``event:`` line when ``name`` is given."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {text}\n\n".encode("utf-8")


async def with_first_json(chunks: AsyncIterator[bytes], edit: Callable[[dict[str, Any]], None]
                          ) -> AsyncIterator[bytes]:
    """A stream with ``edit`` applied to the object of its first JSON ``data:`` event; every other byte is
    passed on as it came, chunk by chunk."""
    held = b""
    async for chunk in chunks:
        ready, held, found = _edit_first(held + chunk, edit)
        if ready:
            yield ready
        if found or len(held) > _MAX_HELD_BYTES:
            break
    if held:
        yield held
    async for chunk in chunks:  # the rest as it comes
        yield chunk


def _edit_first(data: bytes, edit: Callable[[dict[str, Any]], None]) -> tuple[bytes, bytes, bool]:
    """``(bytes to send, bytes still held, found)``: the complete events up to the first JSON one, which
    ``edit`` changes, go out; without one, every complete event goes out as it is."""
    sent = 0
    while match := EVENT_END.search(data, sent):
        raw = data[sent:match.start()]
        lines = raw.splitlines()
        at = next((i for i, line in enumerate(lines) if line.startswith(b"data:")), None)
        event = parse(raw) if at is not None else None
        obj = event.json_object() if event is not None else None
        if at is not None and obj is not None:
            edit(obj)
            lines[at:] = [b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8")]
            return data[:sent] + b"\n".join(lines) + data[match.start():match.end()], data[match.end():], True
        sent = match.end()
    return data[:sent], data[sent:], False
