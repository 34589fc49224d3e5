"""The proxy's rewrite of one user turn, and how a client sees it (a ``bpo`` record and headers)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import BpoLocalError, QueueFull, ServerClosing
from ..optimizer import OptimizeResult
from .bpo_answer import texts
from .owner import PERSON, EngineOwner, Ticket
from .parse import OFF

REWRITTEN = "rewritten"
REMEMBERED = "remembered"
FOLLOW_UP = "follow-up"
NOT_A_USER_TURN = "not a new user turn"
FAILED = "failed"
SKIPPED = "skipped"
APP_TASK = "app task"
"""What the proxy did with a request's last message, as the ``bpo`` record's ``turn`` says it (or ``off``)."""


@dataclass(frozen=True)
class Rewrite:
    """``mode`` names the preset; ``optimized`` is what was forwarded in place of ``original`` (the last
    user turn's text, None when the last message is not a user turn); ``turn`` says what was done,
    ``reason`` why no rewrite went; ``history`` counts the earlier user turns forwarded as their stored
    rewrites."""

    mode: str
    original: str | None
    optimized: str | None = None
    reason: str | None = None
    turn: str = REWRITTEN
    history: int = 0

    @property
    def status(self) -> str:
        return OFF if self.mode == OFF else "optimized" if self.optimized is not None else "original"

    def record(self, upstream_route: str | None = None, translated: bool = False) -> dict[str, Any]:
        """The ``bpo`` record; ``upstream_route`` is where the request went, ``translated`` whether it went
        there in another API than the client's."""
        return {"mode": self.mode, "status": self.status, "turn": self.turn, "original_prompt": self.original,
                "optimized_prompt": self.optimized, "reason": self.reason, "history_rewritten": self.history,
                "upstream_route": upstream_route, "translated": translated}

    def headers(self) -> dict[str, str]:
        """``X-BPO-Status``, ``X-BPO-Mode``, ``X-BPO-Turn``, and the forwarded prompt (percent-encoded
        UTF-8) or the reason."""
        headers = {"X-BPO-Status": self.status, "X-BPO-Mode": self.mode, "X-BPO-Turn": self.turn}
        if self.optimized is not None:
            headers["X-BPO-Optimized-Prompt"] = quote(self.optimized)
        if self.reason:
            headers["X-BPO-Reason"] = quote(self.reason)
        return headers


ONE_CANDIDATE = {"n": 1}
"""The proxy forwards one rewrite: a preset's further candidates (aggressive mode's five) are never generated."""


class Progress:
    """A rewrite's text as it settles, passed to every listener that joins (what was settled before it
    joined first), so a person can watch the rewrite that they wait for."""

    def __init__(self) -> None:
        self.text = ""
        self._listeners: list[asyncio.Queue[str]] = []

    def listen(self, listener: asyncio.Queue[str]) -> None:
        if self.text:
            listener.put_nowait(self.text)
        self._listeners.append(listener)

    def add(self, piece: str) -> None:
        self.text += piece
        for listener in self._listeners:
            listener.put_nowait(piece)


async def rewrite(owner: EngineOwner, text: str, mode: str, seed: int | None, upstream_model: Any, *,
                  timeout: float | None = None, progress: Progress | None = None, priority: int = PERSON) -> Rewrite:
    """Optimize ``text`` with the preset ``mode``, one candidate, at ``priority`` in BPO's queue (an appending preset
    such as PAS: ``text``, its separator and the supplement); its text as it settles goes to ``progress``. An
    empty or failed rewrite, or one not done within ``timeout`` seconds (then stopped), keeps the original. A full
    queue or a closing server is raised: the request is not forwarded."""
    if mode == OFF:
        return Rewrite(mode, text, turn=OFF)
    try:
        ticket = owner.submit(text, mode=mode, seed=seed, overrides=ONE_CANDIDATE,
                              note={"upstream_model": upstream_model}, priority=priority)
        result = await asyncio.wait_for(_settled(ticket, progress), timeout)
    except (QueueFull, ServerClosing):
        raise
    except BpoLocalError as err:
        return Rewrite(mode, text, reason=f"rewrite failed: {err}", turn=FAILED)
    except asyncio.TimeoutError:
        return Rewrite(mode, text, reason=f"the rewrite took longer than the {timeout:g} s it may take; the prompt "
                       "went as typed", turn=FAILED)
    if result.cancelled:
        return Rewrite(mode, text, reason="rewrite cancelled", turn=FAILED)
    if not result.text or result.text == text and ticket.preset.use == "append":
        return Rewrite(mode, text, reason=f"the {'supplement' if ticket.preset.use == 'append' else 'rewrite'} "
                       "was empty", turn=FAILED)
    return Rewrite(mode, text, result.text)


async def _settled(ticket: Ticket, progress: Progress | None) -> OptimizeResult:
    """``ticket``'s result, its text passed to ``progress`` as it settles (leaving early cancels the ticket)."""
    async for piece in texts(ticket):
        if progress is not None:
            progress.add(piece)
    return await ticket.result()
