"""One request's decode loop: a shared prompt, n sequences decoded together, streamed as TokenEvents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from .context import Context
from .sampling import Bans, SamplerChain, sequence_seed
from .types import Completion, FinishReason, GenerationResult, Request, Timings, TokenEvent
from .vocab import TextStream, Vocab

_NEG_INF = float("-inf")


class _Sequence:
    """State of one candidate: its KV sequence id, sampler, tokens, text stream and ban history."""

    __slots__ = ("chain", "finish", "history", "index", "output", "seq_id", "text", "tokens")

    def __init__(self, index: int) -> None:
        self.index = index
        self.seq_id: int | None = None
        self.chain: SamplerChain | None = None
        self.tokens: list[int] = []
        self.history: list[int] = []
        self.text: TextStream | None = None
        self.finish: FinishReason | None = None
        self.output = 0


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


@dataclass
class _Marks:
    """What the loop measures as it goes; turned into Timings at the end."""

    cached_prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    first_token_seconds: float = 0.0
    total_seconds: float = 0.0


class Generation:
    """Iterate for a TokenEvent per sampled token; ``result`` once done, or after ``cancel()``.

    Nothing runs until the first ``next()``. Breaking out of the loop early is fine: the next
    request on the engine (or ``cancel()``) cleans the abandoned sequences up.
    """

    def __init__(self, context: Context, vocab: Vocab, request: Request, seed: int) -> None:
        self._context = context
        self._vocab = vocab
        self._request = request
        self.seed = seed
        self._sequences = [_Sequence(i) for i in range(request.n)]
        self._bans = Bans(request.banned)
        self._events = self._run()
        self._cancel_requested = False
        self._result: GenerationResult | None = None
        self._marks = _Marks()

    def __iter__(self) -> Iterator[TokenEvent]:
        return self

    def __next__(self) -> TokenEvent:
        return next(self._events)

    @property
    def running(self) -> bool:
        return self._events.gi_running

    def cancel(self) -> None:
        """Stop now: finished sequences keep their reason, the others end "cancelled"."""
        self._cancel_requested = True
        if self._events.gi_running:
            return  # called from inside the loop (e.g. another thread): it stops at the next step
        self._events.close()  # a suspended loop cleans up in its finally; an unstarted one never runs
        if self._result is None:
            self._result = self._build_result()

    def run(self) -> GenerationResult:
        """Drain the events and return the result (also after an interrupt, which is re-raised)."""
        try:
            for _ in self:
                pass
        except BaseException:
            self.cancel()
            raise
        return self.result

    @property
    def result(self) -> GenerationResult:
        if self._result is None:
            raise RuntimeError("the generation has not finished: iterate it, or call run() or cancel()")
        return self._result

    # the loop

    def _run(self) -> Iterator[TokenEvent]:
        ctx, request = self._context, self._request
        ctx.claim(self)
        clock = _Clock()
        per_wave = ctx.n_seq_max - 1
        try:
            for wave_start in range(0, request.n, per_wave):
                output, reused = ctx.prefill(request.prompt)
                if wave_start == 0:
                    self._marks.cached_prompt_tokens = reused
                    self._marks.prompt_seconds = clock.elapsed()
                live = self._start_wave(self._sequences[wave_start:wave_start + per_wave], output)
                while live:
                    for seq in live:
                        event = self._sample(seq)
                        if not self._marks.first_token_seconds:
                            self._marks.first_token_seconds = clock.elapsed()
                        if event is not None:
                            clock.pause()
                            yield event
                            clock.resume()
                        if self._cancel_requested:
                            return
                    live = self._decode_step(live)
        finally:
            self._marks.total_seconds = clock.elapsed()
            for seq in self._sequences:
                self._retire(seq)
            ctx.release(self)
            self._result = self._build_result()

    def _start_wave(self, sequences: list[_Sequence], output: int) -> list[_Sequence]:
        request = self._request
        tail = self._bans.history_needed
        for slot, seq in enumerate(sequences, start=1):
            seq.seq_id = slot
            self._context.fork(slot)
            seq.chain = SamplerChain(request.sampling, sequence_seed(self.seed, seq.index))
            seq.history = list(request.prompt[len(request.prompt) - tail:]) if tail else []
            seq.text = TextStream(self._vocab)
            seq.output = output
        return list(sequences)

    def _sample(self, seq: _Sequence) -> TokenEvent | None:
        """Sample seq's next token; mask bans (and stops before min_new_tokens) in place first."""
        request = self._request
        masked = self._bans.banned_now(seq.history) if self._bans else set()
        if len(seq.tokens) < request.min_new_tokens:
            masked |= request.stop_tokens
        if masked:
            logits = self._context.logits_ptr(seq.output)
            for token in masked:
                logits[token] = _NEG_INF
        token = seq.chain.sample(self._context.ctx, seq.output)  # type: ignore[union-attr]
        if token in request.stop_tokens:
            seq.finish = "stop"
            return None
        seq.tokens.append(token)
        if self._bans:
            seq.history.append(token)
        if len(seq.tokens) >= request.max_new_tokens:
            seq.finish = "length"
        return TokenEvent(seq.index, token, seq.text.push(token))  # type: ignore[union-attr]

    def _decode_step(self, live: list[_Sequence]) -> list[_Sequence]:
        """Decode the newest token of every unfinished sequence in one batch; end those that no
        longer fit the context with "length". Returns the sequences still live."""
        for seq in live:
            if seq.finish is not None:
                self._retire(seq)
        live = [s for s in live if s.finish is None]
        prompt_len = len(self._request.prompt)
        in_cache = prompt_len + sum(len(s.tokens) - 1 for s in live)
        while live and in_cache + len(live) > self._context.n_ctx:
            seq = live.pop()
            seq.finish = "length"
            in_cache -= len(seq.tokens) - 1
            self._retire(seq)
        if live:
            self._context.decode([(s.tokens[-1], prompt_len + len(s.tokens) - 1, s.seq_id, True)  # type: ignore[misc]
                                  for s in live])
            for i, seq in enumerate(live):
                seq.output = i
        return live

    def _retire(self, seq: _Sequence) -> None:
        """Free seq's KV cells and sampler (idempotent)."""
        if seq.seq_id is not None:
            self._context.drop(seq.seq_id)
            seq.seq_id = None
        if seq.chain is not None:
            seq.chain.close()
            seq.chain = None

    def _build_result(self) -> GenerationResult:
        completions = tuple(
            Completion(s.index, tuple(s.tokens), self._vocab.detokenize(s.tokens), s.finish or "cancelled")
            for s in self._sequences
        )
        marks = self._marks
        timings = Timings(
            prompt_tokens=len(self._request.prompt),
            cached_prompt_tokens=marks.cached_prompt_tokens,
            prompt_seconds=marks.prompt_seconds,
            first_token_seconds=marks.first_token_seconds,
            generated_tokens=sum(len(s.tokens) for s in self._sequences),
            decode_seconds=max(0.0, marks.total_seconds - marks.prompt_seconds),
            total_seconds=marks.total_seconds,
        )
        return GenerationResult(completions=completions, timings=timings, seed=self.seed)
