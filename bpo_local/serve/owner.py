"""The engine's one owner: a thread that feeds queued optimizations into one continuous batch.

Requests from every client wait in a bounded queue; the owner thread pulls them into the running
``generate_many`` whenever fewer than ``parallel`` are in flight, so concurrent clients decode
together. Each submission is a ``Ticket`` the event loop awaits; cancelling it stops only its own
generation. The owner also records every finished run in the run log (from its own thread, as
SQLite wants).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..backend import BatchGeneration, Request, RequestDone
from ..errors import BpoLocalError, QueueFull, ServerClosing, UsageError
from ..optimizer import CandidateDelta, Optimizer, OptimizeResult
from ..presets import Overrides

if TYPE_CHECKING:
    from ..presets import Preset
    from ..runlog import RunLog

_logger = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 0.2
"""How often an idle owner looks up from the empty queue to see whether it should stop."""
PERSON = 0
"""The queue's first place: a rewrite a person waits on in a chat."""
NORMAL = 1
"""Everything else: BPO answering as the model, /v1/optimize, apps' own tasks."""


class Ticket:
    """One queued optimization: iterate ``deltas()`` for its text as it is generated, or await
    ``result()``. ``cancel()`` stops it (its partial result is still logged)."""

    def __init__(self, owner: EngineOwner, prompt: str, preset: Preset, seed: int | None,
                 note: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.prompt = prompt
        self.preset = preset
        self.seed = seed
        self.note = note
        self.cancelled = False
        self.running_as: tuple[BatchGeneration, int] | None = None
        """The batch it runs in and its index there, once the owner thread has started it."""
        self._owner = owner
        self._loop = loop
        self._events: asyncio.Queue[CandidateDelta | OptimizeResult | BpoLocalError] = asyncio.Queue()
        self._outcome: OptimizeResult | BpoLocalError | None = None
        self._first: CandidateDelta | OptimizeResult | BpoLocalError | None = None
        """The first event, once ``started`` has looked at it."""

    async def started(self) -> None:
        """Wait until it produces text or finishes; raises the error that kept it from starting (so a
        stream can still answer with an error status). Cancelled if awaited no more."""
        if self._first is None and self._outcome is None:
            try:
                self._first = await self._events.get()
            except asyncio.CancelledError:
                self.cancel()
                raise
        if isinstance(self._first, BpoLocalError):
            raise self._first

    async def deltas(self) -> AsyncIterator[CandidateDelta]:
        """Text as it is generated; ends when the result is ready. Leaving early cancels the ticket."""
        try:
            while self._outcome is None:
                event = self._first if self._first is not None else await self._events.get()
                self._first = None
                if isinstance(event, CandidateDelta):
                    yield event
                else:
                    self._outcome = event
        finally:
            if self._outcome is None:
                self.cancel()

    async def result(self) -> OptimizeResult:
        """The finished result; raises the error that kept it from running. Cancelled if awaited no more."""
        async for _ in self.deltas():
            pass
        if isinstance(self._outcome, BpoLocalError):
            raise self._outcome
        return self._outcome  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop it: at once where it runs (its prompt's evaluation too), else when the owner thread looks."""
        if not self.cancelled:
            self.cancelled = True
            self._owner._cancels.put(self)
            if self.running_as is not None:
                batch, index = self.running_as
                batch.cancel_request(index)

    def _send(self, event: CandidateDelta | OptimizeResult | BpoLocalError) -> None:
        """From the owner thread: hand ``event`` to the event loop (dropped once the loop is closed)."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            pass


class EngineOwner:
    """The only thread that drives ``optimizer``'s backend. ``start()``, ``submit()`` from the event
    loop, ``stop()`` at the end."""

    def __init__(self, optimizer: Optimizer, *, parallel: int, queue_size: int, max_tokens: int,
                 log: bool = True) -> None:
        if parallel < 1 or queue_size < 1 or max_tokens < 1:
            raise UsageError(f"parallel, queue size and max tokens must be at least 1 "
                             f"(got {parallel}, {queue_size}, {max_tokens})")
        self.optimizer = optimizer
        self.parallel = parallel
        self.max_tokens = max_tokens
        self._log = log
        self._queue: queue.PriorityQueue[tuple[int, int, Ticket]] = queue.PriorityQueue(maxsize=queue_size)
        self._submitted = itertools.count()
        """Ties in the queue go first come, first served."""
        self._cancels: queue.SimpleQueue[Ticket] = queue.SimpleQueue()
        self._running: dict[int, Ticket] = {}
        self._batch: BatchGeneration | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bpo-engine", daemon=True)
        self._sha256 = ""
        self._ready = threading.Event()
        self._start_error: BpoLocalError | None = None

    def start(self) -> None:
        """Start the owner thread once it has opened the run log (its errors are raised here) and
        hashed the model for it (cached across runs)."""
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def submit(self, prompt: str, *, mode: str, seed: int | None = None, overrides: Mapping[str, Any] | None = None,
               note: Mapping[str, Any] | None = None, priority: int = NORMAL) -> Ticket:
        """Queue ``prompt`` for optimizing with ``mode`` and the sampling ``overrides``, ahead of everything
        queued with a larger ``priority``; ``note`` is added to the logged params. Raises UsageError for bad
        settings, QueueFull, or ServerClosing."""
        if not prompt.strip():
            raise UsageError("empty prompt")
        if self._stopping.is_set():
            raise ServerClosing("the server is shutting down")
        preset = self.preset(mode, dict(overrides or {}))
        ticket = Ticket(self, prompt, preset, seed, MappingProxyType(dict(note or {})), asyncio.get_running_loop())
        try:
            self._queue.put_nowait((priority, next(self._submitted), ticket))
        except queue.Full:
            raise QueueFull(f"all {self._queue.maxsize} places in the queue are taken") from None
        return ticket

    def preset(self, mode: str, overrides: dict[str, Any]) -> Preset:
        """BPO's preset for ``mode`` with ``overrides``, capped at this server's max tokens."""
        asked = overrides.get("max_tokens")
        if asked is not None and asked > self.max_tokens:
            raise UsageError(f"max_tokens {asked} is over this server's limit of {self.max_tokens}")
        preset = self.optimizer.preset(mode, **overrides)
        return preset.with_overrides(Overrides(max_tokens=min(preset.max_new_tokens, self.max_tokens)))

    def stop(self, timeout: float | None = None) -> None:
        """Take no more work, cancel what is queued or running (a prompt being evaluated stops at once),
        and wait for the thread to leave."""
        self._stopping.set()
        for ticket in list(self._running.values()):
            ticket.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # the owner thread

    def _run(self) -> None:
        try:
            log = self._open_log()
        except BpoLocalError as err:
            self._start_error = err
            return
        finally:
            self._ready.set()
        try:
            while not self._stopping.is_set():
                try:
                    self._drive(log)
                except BpoLocalError as err:  # the batch itself failed (a decode error): fail its requests
                    for ticket in self._running.values():
                        ticket._send(err)
                    self._running.clear()
        finally:
            while not self._queue.empty():
                self._queue.get_nowait()[2]._send(ServerClosing("the server is shutting down"))
            if log is not None:
                log.close()

    def _drive(self, log: RunLog | None) -> None:
        self._batch = batch = self.optimizer.backend.generate_many(self._feed())
        for event in batch:
            self._pass_cancels()
            if isinstance(event, RequestDone):
                ticket = self._running.pop(event.index)
                if event.error is not None:
                    ticket._send(event.error)
                    continue
                result = self.optimizer.result_for(ticket.prompt, ticket.preset, event.result)  # type: ignore[arg-type]
                ticket._send(result)
                if log is not None:
                    self._record(log, _noted(result, ticket.note))
            else:
                index, token = event
                if token.text:
                    self._running[index]._send(CandidateDelta(token.index, token.text))

    def _feed(self) -> Iterator[Request | None]:
        """The batch's requests: a queued ticket when there is room, else None ("nothing now").
        Waits on the queue only when nothing is in flight; ends when stopping with nothing in flight."""
        index = 0
        while True:
            self._pass_cancels()
            if len(self._running) >= self.parallel:
                yield None
                continue
            try:
                _, _, ticket = (self._queue.get_nowait() if self._running
                                else self._queue.get(timeout=_IDLE_POLL_SECONDS))
            except queue.Empty:
                if self._running:
                    yield None
                elif self._stopping.is_set():
                    return
                continue
            if self._stopping.is_set():
                ticket._send(ServerClosing("the server is shutting down"))
                continue
            if ticket.cancelled:
                ticket._send(BpoLocalError("cancelled before it started"))
                continue
            try:
                request = self.optimizer.request_for(ticket.prompt, ticket.preset, ticket.seed)
            except BpoLocalError as err:
                ticket._send(err)
                continue
            self._running[index] = ticket
            ticket.running_as = (self._batch, index)  # type: ignore[assignment]
            index += 1
            yield request

    def _pass_cancels(self) -> None:
        """Tell the batch which requests to stop: the tickets cancelled since the last look, and all
        of them once stopping."""
        cancelled = set()
        while True:
            try:
                cancelled.add(self._cancels.get_nowait())
            except queue.Empty:
                break
        for index, ticket in self._running.items():
            if (ticket in cancelled or self._stopping.is_set()) and self._batch is not None:
                self._batch.cancel_request(index)

    def _open_log(self) -> RunLog | None:
        if not self._log:
            return None
        from ..runlog import RunLog

        log = RunLog.open()
        self._sha256 = self.optimizer.model_sha256()
        return log

    def _record(self, log: RunLog, result: OptimizeResult) -> None:
        try:
            log.record(result, self._sha256)
        except BpoLocalError as err:  # the answer went out; a log that fails must not stop the server
            _logger.warning("%s", err)


def _noted(result: OptimizeResult, note: Mapping[str, Any]) -> OptimizeResult:
    """``result`` with ``note`` added to its params (what the run log stores beside BPO's sampling)."""
    return replace(result, params=MappingProxyType({**result.params, **note})) if note else result
