"""BPO as the model: its result as an answer, its generation as a stream of pieces.

The content is exactly what ``bpo-local optimize`` prints: the rewrite, or the candidates separated
by a ``---`` line. Streams send only text no later token can change (see ``settled``), and the rest
when the result is ready, so the pieces add up to the same content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..optimizer import OptimizeResult, format_candidates
from ..presets import Preset
from .answer import Answer, End, Finish, Piece, TextPiece, Usage
from .owner import Ticket


def answer(result: OptimizeResult, model: str) -> Answer:
    """The whole answer, with BPO's own record as ``bpo``."""
    return Answer(model, format_candidates(result.candidates), _finish(result), _usage(result),
                  extra={"bpo": result.to_dict()})


async def pieces(ticket: Ticket) -> AsyncIterator[Piece]:
    """``ticket``'s content as it settles, then its end with the usage and the ``bpo`` record. Leaving early
    cancels the ticket."""
    async for text in texts(ticket):
        yield TextPiece(text)
    result = await ticket.result()
    yield End(_finish(result), _usage(result), {"bpo": result.to_dict()})


def _finish(result: OptimizeResult) -> Finish:
    return "length" if "length" in result.finish_reasons else "stop"


def _usage(result: OptimizeResult) -> Usage:
    return Usage(result.timings.prompt_tokens, result.timings.generated_tokens)


async def texts(ticket: Ticket) -> AsyncIterator[str]:
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
    rest = format_candidates((await ticket.result()).candidates)[len(sent):]
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
