"""How many CPU threads each phase of decoding runs on, chosen by timing it on the machine as it is now.

llama.cpp's workers wait for each other after every op; a worker that shares its core with another
process makes every token wait for it. So all cores is best on an idle machine and far from best when
one is busy (0.4x on 2 cores), and one thread is the reverse: no fixed count is right. A ``Tuner``
times every decode call of a phase ("decode": the live sequences' next tokens; "prompt": a call that
evaluates prompt tokens) at the thread count it ran on, now and then tries a neighbouring count for a
couple of calls, and moves there when it is faster. It tries early (so a busy machine is found within
a few tokens), ever more rarely while nothing changes (so an idle machine pays almost nothing), and at
once when the speed moves away from what it settled at (load came or went). ``llama_set_n_threads``
applies a count between calls; a count given by the user pins it. Both phases start on the cores no
other program is running on when the engine starts (Linux's run queue; elsewhere every core): a
one-shot run evaluates its prompt in one call, before anything is timed, and a count that shares a
busy core can be 4-20x slower than one that does not.

The thread count never changes a result: llama.cpp splits every op's output between threads, and each
output value is computed by one thread the same way whatever the count (tests/test_threads.py checks
it token for token).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

from ...backend import ThreadChoice
from .native import llama

Clock = Callable[[], float]

FIRST_PROBE = 4
"""Calls at the start count before the first try of a neighbour (the first tells a busy machine)."""
MAX_GAP = 1024
"""At most this many calls between tries while the speed holds (each failed try quadruples the gap)."""
PROBE_CALLS = 2
"""Calls a try lasts; its speed is their median. A call under ``WORSE`` x the current speed ends it."""
WORSE = 0.8
OVERHEAD = 0.01
"""After a failed try the next waits long enough that tries like it cost at most this share of the time."""
WINDOW = 5
"""Recent calls at the current count whose median is its speed."""
BETTER = 1.05
"""A neighbour must be this much faster to be taken (noise must not make the count wander)."""
MOVED = 0.7
"""The speed left [MOVED, 1/MOVED] x what it settled at: the load changed, try a neighbour now."""


@dataclass
class Phase:
    """One phase's current count, its recent speeds (tokens/s) and when it tries a neighbour next."""

    name: str
    threads: int
    most: int
    pinned: bool
    why: str
    recent: list[float] = field(default_factory=list)
    settled: float | None = None
    """Speed at the current count when it was last confirmed (None: not yet)."""
    gap: int = FIRST_PROBE
    until_probe: int = FIRST_PROBE
    probe: int | None = None
    """The count being tried, or None."""
    probe_rates: list[float] = field(default_factory=list)
    direction: int = -1
    """Where the next try goes: -1 fewer threads, +1 more."""

    def running(self) -> int:
        """The count the next call of this phase runs on."""
        return self.probe if self.probe is not None else self.threads

    def record(self, rate: float) -> None:
        """The last call ran at ``rate`` tokens/s on ``running()`` threads."""
        if self.pinned:
            return
        if self.probe is not None:
            self.probe_rates.append(rate)
            if len(self.probe_rates) >= PROBE_CALLS or rate < self._speed() * WORSE:
                self._judge()
            return
        self.recent = (self.recent + [rate])[-WINDOW:]
        now = statistics.median(self.recent)
        if self.settled is None and len(self.recent) >= min(WINDOW, FIRST_PROBE):
            self.settled = now
        self.until_probe -= 1
        if self.settled is not None and len(self.recent) >= 3 and not MOVED <= now / self.settled <= 1 / MOVED:
            self.direction = -1 if now < self.settled else 1  # slower: a core got busy; faster: one came free
            self.gap = FIRST_PROBE
            self.until_probe = 0
        if self.until_probe <= 0:
            self._start_probe()

    def _speed(self) -> float:
        """The current count's recent speed (0 before any call)."""
        return statistics.median(self.recent) if self.recent else 0.0

    def reconsider(self) -> None:
        """Try a neighbour at the next call, and soon again after it (as after a slowdown)."""
        if not self.pinned and self.probe is None:
            self.gap = FIRST_PROBE
            self.until_probe = 0
            self._start_probe()

    def _start_probe(self) -> None:
        target = self.threads + self.direction
        if not 1 <= target <= self.most:
            self.direction = -self.direction
            target = self.threads + self.direction
        if not 1 <= target <= self.most:  # one thread is all there is
            self.until_probe = MAX_GAP
            return
        self.probe, self.probe_rates = target, []

    def _judge(self) -> None:
        tried, rate = self.probe, statistics.median(self.probe_rates)
        assert tried is not None
        self.probe = None
        current = self._speed()
        if rate > current * BETTER:
            tried, self.threads, rate, current = self.threads, tried, current, rate
            self.recent, self.settled = [current], current
            self.gap = FIRST_PROBE  # keep going the same way soon: the best may be further
        else:
            self.direction = -self.direction
            self.settled = current
            spent = len(self.probe_rates) * (current / rate - 1) if rate > 0 else MAX_GAP  # in calls at `current`
            self.gap = min(max(self.gap * 4, int(spent / OVERHEAD)), MAX_GAP)
        self.until_probe = self.gap
        self.why = f"measured: {_threads(self.threads)} {current:.0f} tok/s, {tried} {rate:.0f}"

    def choice(self) -> ThreadChoice:
        return ThreadChoice(self.name, self.threads, self.why)


class Tuner:
    """The thread counts of one llama.cpp context, per phase. ``pinned`` (the user's ``--threads``) fixes
    both; else each starts on the cores free now (at most ``most``) and is tuned by timing calls with ``clock``."""

    def __init__(self, ctx: object, *, most: int, pinned: int | None, clock: Clock = time.perf_counter) -> None:
        self._lib = llama()
        self._ctx = ctx
        self.clock = clock
        free = most if pinned else free_cores(most)
        start = pinned or free
        why = "pinned by --threads" if pinned else f"{free} of {most} cores free at the start, not measured yet"
        self.phases = {name: Phase(name, start, max(most, start), pinned is not None, why)
                       for name in ("decode", "prompt")}
        self._applied = (self._lib.llama_n_threads(ctx), self._lib.llama_n_threads_batch(ctx))

    def start(self, prompt: bool) -> tuple[Phase, float]:
        """Before a call: set its phase's count on the context; (the phase, the start time)."""
        phase = self.phases["prompt" if prompt else "decode"]
        n = phase.running()
        if self._applied != (n, n):  # llama.cpp takes n_threads for 1-token batches, n_threads_batch else
            self._lib.llama_set_n_threads(self._ctx, n, n)
            self._applied = (n, n)
        return phase, self.clock()

    def stop(self, phase: Phase, started: float, n_tokens: int) -> None:
        """After a successful call of ``n_tokens`` tokens that began at ``started``."""
        seconds = self.clock() - started
        if seconds > 0:
            phase.record(n_tokens / seconds)

    def reconsider(self) -> None:
        """Try other counts now in both phases (e.g. when the caller knows the load changed)."""
        for phase in self.phases.values():
            phase.reconsider()

    def choices(self) -> tuple[ThreadChoice, ...]:
        return tuple(phase.choice() for phase in self.phases.values())


def free_cores(most: int, stat: Path = Path("/proc/stat")) -> int:
    """How many of ``most`` cores no other program runs on now: ``most`` less the runnable threads
    (besides this one) in the kernel's run queue, the median of a few readings; ``most`` where the
    kernel does not say."""
    readings = []
    for _ in range(3):
        try:
            text = stat.read_text()
        except OSError:
            return most
        running = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("procs_running ")), None)
        if running is None:
            return most
        readings.append(running - 1)
        time.sleep(0.001)
    return max(1, most - int(statistics.median(readings)))


def _threads(n: int) -> str:
    return f"{n} thread" + "s" * (n > 1)
