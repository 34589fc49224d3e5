"""One request inside a generation: its sequences, samplers, bans, timing marks and result.

The scheduler (generation.py) decides when a request's sequences run and in which KV slots; a Job
only knows how to start a wave of its sequences, sample their next tokens and report the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...backend import Completion, FinishReason, GenerationResult, Request, Timings, TokenEvent
from .context import Context
from .sampling import Bans, SamplerChain, sequence_seed
from .vocab import TextStream, Vocab

_NEG_INF = float("-inf")


class Slot:
    """State of one candidate: its KV sequence id, sampler, tokens, text stream and ban history."""

    __slots__ = ("chain", "finish", "history", "index", "job", "output", "seq_id", "text", "tokens")

    def __init__(self, job: Job, index: int) -> None:
        self.job = job
        self.index = index
        self.seq_id: int | None = None
        self.chain: SamplerChain | None = None
        self.tokens: list[int] = []
        self.history: list[int] = []
        self.text: TextStream | None = None
        self.finish: FinishReason | None = None
        self.output = 0


@dataclass
class _Marks:
    """What the scheduler measures for one request, as readings of its clock; Timings at the end."""

    start: float | None = None
    cached_prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    first_token_seconds: float = 0.0
    total_seconds: float = 0.0


class Job:
    """Request ``index`` of a generation, with the seed its sequences draw from."""

    def __init__(self, index: int, request: Request, seed: int, context: Context, vocab: Vocab) -> None:
        self.index = index
        self.request = request
        self.seed = seed
        self._context = context
        self._vocab = vocab
        self.slots = [Slot(self, i) for i in range(request.n)]
        self._bans = Bans(request.banned)
        self.started = 0
        """Sequences given a KV slot so far (they start in waves when there are too few slots)."""
        self.live = 0
        self.cancelled = False
        self.cells: frozenset[int] = frozenset()
        """KV cells of the prompt its live sequences share (released when none is live)."""
        self.marks = _Marks()

    @property
    def waiting(self) -> int:
        return 0 if self.cancelled else len(self.slots) - self.started

    def cancel(self) -> None:
        """Start no more sequences; the live ones end "cancelled" at the next step."""
        self.cancelled = True
        for slot in self.slots:
            if slot.seq_id is not None and slot.finish is None:
                slot.finish = "cancelled"

    @property
    def done(self) -> bool:
        return self.waiting == 0 and self.live == 0

    def start_wave(self, seq_ids: list[int], output: int, cells: frozenset[int]) -> list[Slot]:
        """Start the next len(seq_ids) sequences of this request in those KV sequences, which hold its
        prompt (just prefilled, logits at ``output``, in ``cells``)."""
        request, tail = self.request, self._bans.history_needed
        wave = self.slots[self.started:self.started + len(seq_ids)]
        for seq_id, slot in zip(seq_ids, wave):
            slot.seq_id = seq_id
            slot.chain = SamplerChain(request.sampling, sequence_seed(self.seed, slot.index))
            slot.history = list(request.prompt[len(request.prompt) - tail:]) if tail else []
            slot.text = TextStream(self._vocab)
            slot.output = output
        self.started += len(wave)
        self.live += len(wave)
        self.cells |= cells
        return wave

    def sample(self, slot: Slot) -> TokenEvent | None:
        """Sample slot's next token; mask bans (and stops before min_new_tokens) in place first."""
        request = self.request
        masked = self._bans.banned_now(slot.history) if self._bans else set()
        if len(slot.tokens) < request.min_new_tokens:
            masked |= request.stop_tokens
        if masked:
            logits = self._context.logits_ptr(slot.output)
            for token in masked:
                logits[token] = _NEG_INF
        token = slot.chain.sample(self._context.ctx, slot.output)  # type: ignore[union-attr]
        if token in request.stop_tokens:
            slot.finish = "stop"
            return None
        slot.tokens.append(token)
        if self._bans:
            slot.history.append(token)
        if len(slot.tokens) >= request.max_new_tokens:
            slot.finish = "length"
        return TokenEvent(slot.index, token, slot.text.push(token))  # type: ignore[union-attr]

    def retire(self, slot: Slot) -> bool:
        """Free slot's KV cells and sampler; True the first time (idempotent)."""
        if slot.seq_id is None:
            return False
        self._context.drop(slot.seq_id)
        slot.seq_id = None
        slot.chain.close()  # type: ignore[union-attr]
        slot.chain = None
        self.live -= 1
        if not self.live:
            self.cells = frozenset()
        return True

    def result(self) -> GenerationResult:
        """What the request produced; sequences without a finish reason end "cancelled"."""
        completions = tuple(
            Completion(s.index, tuple(s.tokens), self._vocab.detokenize(s.tokens), s.finish or "cancelled")
            for s in self.slots
        )
        marks = self.marks
        timings = Timings(
            prompt_tokens=len(self.request.prompt),
            cached_prompt_tokens=marks.cached_prompt_tokens,
            prompt_seconds=marks.prompt_seconds,
            first_token_seconds=marks.first_token_seconds,
            generated_tokens=sum(len(s.tokens) for s in self.slots),
            decode_seconds=max(0.0, marks.total_seconds - marks.prompt_seconds),
            total_seconds=marks.total_seconds,
            threads=self._context.threads.choices(),
        )
        return GenerationResult(completions=completions, timings=timings, seed=self.seed)
