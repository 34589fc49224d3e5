"""The decode loop: continuous batching of requests on one context, streamed as events.

``BatchGeneration`` admits requests in order whenever enough sequence slots (and context) are free.
Each step is one ``llama_decode`` of the newest token of every live sequence of every request, plus
the prompts of the requests admitted for it. The first is evaluated into the cache sequence after
the prefix it shares with the previous prompt and forked into the request's slots after the step; the
others that fit the same batch, each starting all its sequences, are evaluated beside it straight into
their own slots, sharing the cached prefix. So a burst of requests starts, and ends, together. After
the step every live sequence samples its next token. ``Generation`` is the one-request case of the
same loop.

A long prompt is evaluated a micro-batch (``n_ubatch`` tokens) at a time, alone, until its rest fits a
micro-batch beside the live tokens, and the live sequences take a step between its pieces: the others'
text keeps coming, and a request cancelled while its prompt is evaluated alone so (or the whole batch)
stops within a graph node on the CPU. Prompts that start together in one step are bounded by the batch.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ...backend import GenerationResult, RequestDone, TokenEvent
from .context import Context, Entry, Interrupted
from .job import Job, Slot

Event = tuple[int, TokenEvent] | RequestDone
"""What a BatchGeneration yields: (request index, token event), or a finished request."""

_END = object()


@dataclass
class _Staged:
    """A request admitted for the next step: the slots its wave starts in and its prompt's remaining
    entries; ``cells`` are its prompt's cells when it is staged beside the cache (None: in the cache
    sequence, forked into ``seqs`` after the step)."""

    job: Job
    seqs: list[int]
    entries: list[Entry]
    cells: frozenset[int] | None


class _Clock:
    """Time spent inside the generator, not while the caller holds a yielded event."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._paused = 0.0
        self._pause_at = 0.0

    def pause(self) -> None:
        self._pause_at = time.perf_counter()

    def resume(self) -> None:
        self._paused += time.perf_counter() - self._pause_at

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._paused


class BatchGeneration:
    """Iterate for ``(request index, TokenEvent)`` per sampled token and a ``RequestDone`` per request
    as it finishes; requests are numbered from 0 in the order given.

    Requests are pulled from the iterable only when there is room to start them, so it may be lazy;
    it may also yield None for "nothing to start now": the live sequences go on and it is asked again
    at the next step (at once when nothing is live, so it should then wait until it has a request).
    The batch ends when the iterable is exhausted and nothing is live.
    At most ``max_sequences`` sequences (all slots when None) are live at once; a request with more
    candidates runs in waves. A request starts only when the context can hold every live sequence at
    its max_new_tokens, so running beside others never cuts a sequence short; a request alone that
    does not fit ends sequences with "length" as the context fills. ``results`` maps index ->
    GenerationResult for finished requests and, after ``cancel()``, for interrupted ones too.
    Nothing runs until the first ``next()``; breaking out early is fine: the next request on the
    engine (or ``cancel()``) cleans the abandoned sequences up.
    """

    def __init__(self, context: Context, jobs: Iterator[Job | RequestDone], max_sequences: int | None) -> None:
        self._context = context
        self._jobs = jobs
        slots = context.n_seq_max - 1
        self._limit = min(max_sequences or slots, slots)
        self._free = list(range(1, context.n_seq_max))
        self._live: list[Slot] = []
        self._head: Job | None = None
        self._staged: list[_Staged] = []
        self._known: dict[int, Job] = {}
        self._clock = _Clock()
        self._cancel_requested = False
        self._cancelling: set[int] = set()
        self._prefilling: int | None = None
        """The request whose prompt piece is being evaluated alone right now, if any."""
        self._exhausted = False
        self.results: dict[int, GenerationResult] = {}
        self.finished = False
        self._events = self._run()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    @property
    def running(self) -> bool:
        return self._events.gi_running

    def cancel(self) -> None:
        """Stop now: finished sequences keep their reason, the others end "cancelled"."""
        self._cancel_requested = True
        if self._events.gi_running:  # from a signal handler or another thread: the decode in flight stops too
            self._context.interrupt()
            return
        self._events.close()  # a suspended loop cleans up in its finally; an unstarted one never runs
        self.finished = True

    def cancel_request(self, index: int) -> None:
        """Stop request ``index`` alone at the next step: it ends "cancelled" (sequences already
        finished keep their reason) and its RequestDone follows; the others go on. From any thread:
        a piece of its prompt being evaluated stops at once. One not pulled yet never runs; a finished
        one is left as is."""
        self._cancelling.add(index)
        if self._prefilling == index:
            self._context.interrupt()

    def run(self) -> dict[int, GenerationResult]:
        """Drain the events and return ``results`` (also after an interrupt, which is re-raised)."""
        try:
            for _ in self:
                pass
        except BaseException:
            self.cancel()
            raise
        return self.results

    # the loop

    def _run(self) -> Iterator[Event]:
        self._context.claim(self)
        self._clock = clock = _Clock()
        phases = self._phases()
        try:
            for event in phases:
                clock.pause()
                yield event
                clock.resume()
                if self._cancel_requested:
                    return
        finally:
            phases.close()
            for slot in self._live:
                self._retire(slot)
            for staged in self._staged:  # admitted, never decoded: a prefix may have been copied into its slots
                for seq in staged.seqs:
                    self._context.drop(seq)
            for job in self._known.values():
                self._close(job)
            self._context.release(self)
            self.finished = True

    def _phases(self) -> Iterator[Event]:
        while not self._cancel_requested:  # (pieces of a prompt alone yield nothing between them)
            yield from self._drop_cancelled()
            yield from self._admit()
            if not self._live and not self._staged:
                if self._exhausted:
                    return  # with nothing live, _admit stages the next request: none is left
                continue  # the iterable had nothing to start yet
            self._fit_context()
            yield from self._settle()
            if self._live or self._staged:
                try:
                    stepped = self._decode()
                except Interrupted:  # the context is as before the decode
                    if self._cancel_requested:
                        return
                    continue  # its cancelled request is dropped, the step runs again
                for slot in stepped:
                    yield from self._sample(slot)
                yield from self._settle()

    def _admit(self) -> Iterator[Event]:
        """Stage the next requests, in order, while there are slots and context for their next waves:
        the first in the cache sequence, the others beside it if each starts whole and fits the batch."""
        while True:
            running = len(self._live) + sum(len(s.seqs) for s in self._staged)
            if self._head is None and running >= self._limit:
                return  # no slot: the next request is not pulled yet
            job = self._head or self._pull()
            if job is None:
                return
            if isinstance(job, RequestDone):
                yield job
                continue
            if job.index in self._cancelling:  # cancelled before it was pulled: it never runs
                yield from self._drop_cancelled()
                continue
            if any(s.job is job for s in self._staged):
                return  # its next wave starts at a later step
            self._head = job
            wave = min(job.waiting, self._limit)
            reuse = self._context.reusable(job.request.prompt)
            if running and (running + wave > self._limit or not self._fits(job, wave, reuse)):
                return
            if self._staged and not self._joins(job, wave, reuse):
                return
            if wave == job.waiting:
                self._head = None
            self._stage(job, wave)

    def _pull(self) -> Job | RequestDone | None:
        job = next(self._jobs, _END)
        if job is _END:
            self._exhausted = True
            return None
        if isinstance(job, Job):
            self._known[job.index] = job
        return job  # type: ignore[return-value]

    def _drop_cancelled(self) -> Iterator[Event]:
        """End the requests ``cancel_request`` named; report each one that has nothing left to run."""
        if not self._cancelling:
            return
        self._unstage_cancelled()
        staged = {s.job.index for s in self._staged}
        for index in sorted(self._cancelling - staged):  # a prompt staged with others is decoded, then cancelled
            job = self._known.get(index)
            if job is None:
                if index in self.results:
                    self._cancelling.discard(index)
                continue  # not pulled yet: cancelled when it is
            self._cancelling.discard(index)
            job.cancel()
            if self._head is job:
                self._head = None
            if not job.live:
                del self._known[index]
                yield RequestDone(index, self._close(job))
        yield from self._settle()

    def _unstage_cancelled(self) -> None:
        """Give up a cancelled lead staged alone (its prompt part evaluated, which stays cached for reuse)."""
        if len(self._staged) == 1 and self._staged[0].job.index in self._cancelling:
            lead = self._staged.pop()
            self._context.unstage()
            self._free = sorted(self._free + lead.seqs)

    def _fits(self, job: Job, wave: int, reuse: int) -> bool:
        """Whether the context holds every prompt cell plus every live and staged sequence, and
        ``wave`` new ones of ``job`` (whose prompt reuses ``reuse`` tokens), at their longest."""
        ctx, prompt = self._context, job.request.prompt
        # Staged first, job's prompt keeps the cache it reuses; beside others, the cache stays whole.
        cached = ctx.cells() if self._staged else ctx.cells(reuse)
        cells = len(self._prompt_cells(cached)) + sum(len(s.entries) for s in self._staged) + len(prompt) - reuse
        reserved = sum(s.job.request.max_new_tokens - 1 for s in self._live)
        reserved += sum(len(s.seqs) * (s.job.request.max_new_tokens - 1) for s in self._staged)
        return cells + reserved + wave * (job.request.max_new_tokens - 1) <= ctx.n_ctx

    def _joins(self, job: Job, wave: int, reuse: int) -> bool:
        """Whether ``job`` can start beside the staged requests: all its sequences at once (later waves
        fork from the cache sequence), its prompt's rest within the batch, and the lead's within one step
        (a lead evaluated in pieces is alone)."""
        entries = len(self._live) + sum(len(s.entries) for s in self._staged)
        return (wave == job.waiting and not self._piece(self._staged[0])
                and entries + len(job.request.prompt) - reuse <= self._context.n_batch)

    def _prompt_cells(self, cached: frozenset[int]) -> frozenset[int]:
        return cached.union(*(job.cells for job in self._known.values()))

    def _stage(self, job: Job, wave: int) -> None:
        """Prepare job's prompt for the next steps: in the cache sequence, or (when others are staged)
        beside it in the wave's own slots."""
        ctx, marks = self._context, job.marks
        if job.started == 0:
            marks.start = self._clock.elapsed()
        seqs, self._free = self._free[:wave], self._free[wave:]
        cells = None
        if self._staged:
            entries, reused, cells = ctx.stage_beside(job.request.prompt, seqs, self._staged[0].entries)
        else:
            entries, reused = ctx.stage(job.request.prompt)
        if job.started == 0:
            marks.cached_prompt_tokens = reused
        self._staged.append(_Staged(job, seqs, entries, cells))

    def _sample(self, slot: Slot) -> Iterator[Event]:
        job = slot.job
        event = job.sample(slot)
        if not job.marks.first_token_seconds:
            job.marks.first_token_seconds = self._clock.elapsed() - job.marks.start  # type: ignore[operator]
        if event is not None:
            yield job.index, event

    def _fit_context(self) -> None:
        """End the newest live sequences with "length" until the next step fits the context."""
        live = list(self._live)
        staged = sum(len(s.entries) for s in self._staged)
        in_cache = len(self._prompt_cells(self._context.cells())) + sum(len(s.tokens) - 1 for s in live) + staged
        while live and in_cache + len(live) > self._context.n_ctx:
            slot = live.pop()
            slot.finish = "length"
            in_cache -= len(slot.tokens) - 1

    def _settle(self) -> Iterator[Event]:
        """Free the finished sequences; report each request that has none left to run."""
        finished = [s for s in self._live if s.finish is not None]
        self._live = [s for s in self._live if s.finish is None]
        for slot in finished:
            self._retire(slot)
        for job in dict.fromkeys(s.job for s in finished):
            if job.done:
                del self._known[job.index]
                yield RequestDone(job.index, self._close(job))

    def _decode(self) -> list[Slot]:
        """One step: the newest token of every live sequence, and the staged prompts; then start them.
        While the lead's prompt is longer than a micro-batch beside the live tokens, its next piece is
        evaluated alone first and the staged prompts wait. Returns the sequences that have logits."""
        live, ctx = list(self._live), self._context
        waiting = bool(self._staged) and self._prefill(self._staged[0])
        starting = [] if waiting else self._staged
        if not live and not starting:
            return live
        entries: list[Entry] = [(s.tokens[-1], len(s.job.request.prompt) + len(s.tokens) - 1, (s.seq_id,), True)
                                for s in live]  # type: ignore[misc]
        ends = []
        for staged in starting:
            entries += staged.entries
            ends.append(len(entries) - 1)
        ctx.decode(entries, prompt=bool(starting))
        for i, slot in enumerate(live):
            slot.output = i
        if not starting:
            return live
        started, self._staged = self._staged, []
        for staged, output in zip(started, ends):
            job = staged.job
            if job.started == 0:
                job.marks.prompt_seconds = self._clock.elapsed() - job.marks.start  # type: ignore[operator]
            cells = staged.cells
            if cells is None:  # the lead: fork the cache sequence, which now holds its prompt
                for seq in staged.seqs:
                    ctx.fork(seq)
                cells = ctx.cells()
            self._live.extend(job.start_wave(staged.seqs, output, cells))
        return list(self._live)

    def _piece(self, lead: _Staged) -> int:
        """How much of the lead's prompt to evaluate alone next: a micro-batch (never its last token, which
        the step samples from) while its rest is longer than a micro-batch beside the live tokens; else 0."""
        ctx = self._context
        if len(lead.entries) <= max(1, ctx.n_ubatch - len(self._live)):
            return 0
        return min(ctx.n_ubatch, len(lead.entries) - 1)

    def _prefill(self, lead: _Staged) -> bool:
        """Evaluate the lead's next piece alone, if it has one; whether it did."""
        piece = self._piece(lead)
        if not piece:
            return False
        ctx = self._context
        self._prefilling = lead.job.index
        if lead.job.index in self._cancelling:  # cancelled since this step began: stop the piece at once
            ctx.interrupt()
        try:
            ctx.decode(lead.entries[:piece], prompt=True)
        finally:
            self._prefilling = None
        del lead.entries[:piece]
        return True

    def _retire(self, slot: Slot) -> None:
        seq_id = slot.seq_id
        if slot.job.retire(slot):
            bisect.insort(self._free, seq_id)

    def _close(self, job: Job) -> GenerationResult:
        if job.marks.start is not None:
            job.marks.total_seconds = self._clock.elapsed() - job.marks.start
        self.results[job.index] = result = job.result()
        return result


class Generation:
    """One request: iterate for a TokenEvent per sampled token; ``result`` once done, or after ``cancel()``.

    Nothing runs until the first ``next()``. Breaking out of the loop early is fine: the next
    request on the engine (or ``cancel()``) cleans the abandoned sequences up.
    """

    def __init__(self, batch: BatchGeneration, job: Job) -> None:
        self._batch = batch
        self._job = job
        self.seed = job.seed

    def __iter__(self) -> Iterator[TokenEvent]:
        return self

    def __next__(self) -> TokenEvent:
        while True:
            event = next(self._batch)
            if isinstance(event, tuple):
                return event[1]

    @property
    def running(self) -> bool:
        return self._batch.running

    def cancel(self) -> None:
        """Stop now: finished sequences keep their reason, the others end "cancelled"."""
        self._batch.cancel()

    def run(self) -> GenerationResult:
        """Drain the events and return the result (also after an interrupt, which is re-raised)."""
        self._batch.run()
        return self.result

    @property
    def result(self) -> GenerationResult:
        if not self._batch.finished:
            raise RuntimeError("the generation has not finished: iterate it, or call run() or cancel()")
        if self._job.index not in self._batch.results:  # cancelled before it started
            self._batch.results[self._job.index] = self._job.result()
        return self._batch.results[self._job.index]
