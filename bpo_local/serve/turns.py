"""Which user turns the proxy rewrites, and how a conversation goes upstream.

A user turn is rewritten once: its rewrite is kept in the rewrite store, and the same turn again (a
retry, a regenerate, the turn carried as history) gets the stored rewrite without generating.
Identical turns in flight at once share one generation. By default only a conversation's first
user turn is rewritten (BPO was trained on single-turn prompts); ``all`` rewrites each new user
turn. A request whose last message is not a user turn (a tool result, an assistant prefill) makes
no new rewrite. Earlier user turns with a stored rewrite go upstream as that rewrite, so each
earlier answer sits under the question it answered (unless history is kept ``original``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import RewriteStoreError
from .owner import PERSON, EngineOwner
from .parse import OFF
from .rewrite import FOLLOW_UP, NOT_A_USER_TURN, ONE_CANDIDATE, REMEMBERED, SKIPPED, Progress, Rewrite, rewrite
from .show import SKIP_PREFIX, skipped
from .store import RewriteStore, turn_key

_logger = logging.getLogger(__name__)

APP_ROLE = "app"
"""The role of a user message that holds an app's own text alone (``apps.persons_turns``): no person's turn, so
never rewritten and never a conversation's first."""
_NOT_TURNS = (APP_ROLE, "system")
"""Roles that never end a conversation's turn: an app's own text and instructions (system, developer) sent after
the person's message."""


@dataclass(frozen=True)
class Turn:
    """A message as the turn rules see it, in any API: its role (system, user, assistant, tool, or app: a user
    message holding an app's own text alone) and, for a user message, the text BPO may rewrite (None where it
    holds none: an image alone, a tool result) and whether it holds more than text."""

    role: str
    text: str | None = None
    media: bool = False
    """The message holds more than text (an image, a file): the person's even where all its text is an app's."""


def last_turn(turns: Sequence[Turn]) -> int | None:
    """The index of the conversation's last turn: the last message but an app's own and instructions that follow
    it (an agent's reminders, an app's system message after the person's message); None for none."""
    return next((i for i in reversed(range(len(turns))) if turns[i].role not in _NOT_TURNS), None)


def may_rewrite(turns: Sequence[Turn], mode: str, rule: str, continues: bool = False) -> bool:
    """Whether the turn rules may rewrite (or recall a rewrite of) the conversation's last turn: a new user turn
    with text, not sent past BPO, and under rule ``first`` the conversation's first."""
    index = last_turn(turns)
    last = turns[index] if index is not None else None
    if mode == OFF or last is None or last.role != "user" or last.text is None or skipped(last.text) is not None:
        return False
    return rule == "all" or not (continues or any(t.role == "user" for t in turns[:index]))


@dataclass
class _Shared:
    """One generation in flight, its text so far, and how many requests wait for it."""

    task: asyncio.Future[Rewrite]
    progress: Progress
    waiters: int = 0


@dataclass
class Rewriter:
    """The proxy's turn rules over the engine's owner and the store; ``build`` names BPO's model
    (its digest, or the servers' model) in every store key."""

    owner: EngineOwner
    store: RewriteStore | None
    build: str
    seed: int | None = None
    history: str = "rewritten"
    timeout: float | None = None
    """How long a rewrite may take before it is stopped and the original goes (None: no limit)."""
    _in_flight: dict[str, _Shared] = field(default_factory=dict)

    def key(self, text: str, mode: str) -> str:
        preset = self.owner.preset(mode, ONE_CANDIDATE)
        return turn_key(text, self.build, {"preset": asdict(preset), "seed": self.seed})

    async def conversation(self, turns: Sequence[Turn], mode: str, rule: str, upstream_model: Any,
                           continues: bool = False, watch: asyncio.Queue[str] | None = None,
                           priority: int = PERSON) -> tuple[dict[int, str], Rewrite]:
        """The texts that go upstream in place of the user turns at their indexes, and what was done with
        the last turn. ``continues``: earlier turns of the conversation live upstream, out of sight. ``watch``
        gets the new turn's rewrite as it settles, where one is generated; ``priority`` is its place in BPO's
        queue."""
        users = [(i, t.text) for i, t in enumerate(turns) if t.role == "user" and t.text is not None]
        new = users[-1] if users and users[-1][0] == last_turn(turns) else None
        # the turns a person sent past BPO with the skip prefix go as typed, without it
        typed = {i: rest for i, text in users if (rest := skipped(text)) is not None}
        if mode == OFF:
            return typed, Rewrite(mode, new[1] if new else None, turn=OFF)
        earlier = [(i, text) for i, text in (users[:-1] if new else users) if i not in typed]
        keys = {i: self.key(text, mode) for i, text in users if i not in typed}
        stored = self._get(keys.values())
        done = await self._new_turn(new, keys, stored, mode, rule, upstream_model, turns, continues, watch,
                                    priority)
        swaps = {i: stored[keys[i]] for i, _ in earlier if self.history == "rewritten" and keys[i] in stored}
        history = len(swaps)
        if new and done.optimized is not None:
            swaps[new[0]] = done.optimized
        return {**typed, **swaps}, replace(done, history=history)

    async def _new_turn(self, new: tuple[int, str] | None, keys: dict[int, str], stored: dict[str, str], mode: str,
                        rule: str, upstream_model: Any, turns: Sequence[Turn], continues: bool,
                        watch: asyncio.Queue[str] | None, priority: int) -> Rewrite:
        if new is None:
            index = last_turn(turns)
            role = turns[index].role if index is not None else None
            what = "a user message without text" if role == "user" else f"a {role} message" if role else "none"
            return Rewrite(mode, None, turn=NOT_A_USER_TURN,
                           reason=f"the last message is {what}: nothing new to rewrite")
        index, text = new
        if index not in keys:
            return Rewrite(mode, text, turn=SKIPPED, reason=f"the message began with {SKIP_PREFIX}: it went as "
                           "typed, without the prefix")
        if rule == "first" and (continues or any(t.role == "user" for t in turns[:index])):
            return Rewrite(mode, text, turn=FOLLOW_UP, reason="a follow-up: BPO rewrites a conversation's first "
                           "user turn only (the header X-BPO-Turns: all rewrites each)")
        key = keys[index]
        if key in stored:
            return Rewrite(mode, text, stored[key], turn=REMEMBERED)
        return await self._shared(key, text, mode, upstream_model, watch, priority)

    async def _shared(self, key: str, text: str, mode: str, upstream_model: Any,
                      watch: asyncio.Queue[str] | None, priority: int) -> Rewrite:
        """The rewrite of ``text``: one generation for every request that asks while it runs; it is
        cancelled only when all of them have gone."""
        shared = self._in_flight.get(key)
        if shared is None:
            progress = Progress()
            shared = self._in_flight[key] = _Shared(asyncio.ensure_future(
                self._generate(key, text, mode, upstream_model, progress, priority)), progress)
            shared.task.add_done_callback(lambda _, ended=shared: self._forget(key, ended))
        if watch is not None:
            shared.progress.listen(watch)
        shared.waiters += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            if watch is not None:
                shared.progress.unlisten(watch)
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                self._forget(key, shared)  # a request arriving while it unwinds starts afresh, never joins it
                shared.task.cancel()

    def _forget(self, key: str, ended: _Shared) -> None:
        if self._in_flight.get(key) is ended:
            del self._in_flight[key]

    async def _generate(self, key: str, text: str, mode: str, upstream_model: Any, progress: Progress,
                        priority: int) -> Rewrite:
        done = await rewrite(self.owner, text, mode, self.seed, upstream_model, timeout=self.timeout,
                             progress=progress, priority=priority)
        if done.optimized is not None and self.store is not None:
            try:
                self.store.put(key, text, done.optimized, mode)
            except RewriteStoreError as err:  # the answer still goes; only the memory of it is lost
                _logger.warning("%s", err)
        return done

    def _get(self, keys: Any) -> dict[str, str]:
        if self.store is None:
            return {}
        try:
            return self.store.get_many(keys)
        except RewriteStoreError as err:
            _logger.warning("%s", err)
            return {}

