"""A llama.cpp context: batched decoding, and the prompt cache kept in a reserved sequence.

Sequence 0 holds the last evaluated prompt; a new prompt re-evaluates only what follows the longest
common prefix. Generated sequences (1..n_seq_max-1) are forked from it with ``llama_memory_seq_cp``;
with a unified KV cache the prompt's cells are shared, not copied, and survive in the forks when
sequence 0 moves on to another prompt. More prompts can be staged beside the one being evaluated into
the cache (the lead), straight into their own sequences, so several start in one decode: they take
the prefix they share with the lead from the cache, or join the lead's own tokens (one cell, several
sequences), and evaluate only the rest themselves. Each cached position carries the id of its KV
cell, so a scheduler can count the distinct cells that several generations' prompts occupy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ...errors import ContextFull, DecodeFailed
from .interrupt import Interrupt
from .native import llama
from .threads import Tuner

if TYPE_CHECKING:
    import numpy as np

CACHE_SEQ = 0
LOGITS_CHUNK = 512
"""Positions scored per decode in ``logits``: bounds llama.cpp's output buffer (rows x n_vocab floats)."""

Entry = tuple[int, int, tuple[int, ...], bool]
"""One batch entry: (token, position, the sequence ids it belongs to, whether its logits are wanted)."""
_ABORTED = 2
"""What llama_decode returns when the abort callback stopped it."""


class Interrupted(Exception):
    """``interrupt()`` stopped a decode: the context is as it was before that decode."""


class Owner(Protocol):
    """Whatever currently drives the candidate sequences (a Generation); it can be told to stop."""

    def cancel(self) -> None: ...

    @property
    def running(self) -> bool: ...


class Context:
    def __init__(self, ctx: object, n_vocab: int, *, most_threads: int, pinned_threads: int | None) -> None:
        lib = llama()
        self._lib = lib
        self.ctx = ctx
        self.threads = Tuner(ctx, most=most_threads, pinned=pinned_threads)
        """Each phase's thread count, tuned by timing the decode calls (see ``threads``)."""
        self._mem = lib.llama_get_memory(ctx)
        self.n_vocab = n_vocab
        self.n_ctx: int = lib.llama_n_ctx(ctx)
        self.n_batch: int = lib.llama_n_batch(ctx)
        self.n_ubatch: int = lib.llama_n_ubatch(ctx)
        self.n_seq_max: int = lib.llama_n_seq_max(ctx)
        self._batch = lib.llama_batch_init(max(self.n_batch, self.n_seq_max), 0, self.n_seq_max)
        self.cached: list[int] = []
        self._cell_ids: list[int] = []
        """A unique id per cached position's KV cell (a re-evaluated position gets a new one)."""
        self._next_cell = 0
        self._lead: Sequence[int] = ()
        """The prompt staged into the cache sequence for the next decode (``cached`` + its pending rest)."""
        self._lead_cells: list[int] = []
        """Cell ids of the lead's positions not decoded yet, in order."""
        self._owner: Owner | None = None
        self._interrupt = Interrupt(lib, ctx)

    # ownership: one generation at a time drives the candidate sequences

    def claim(self, owner: Owner | None) -> None:
        """Make ``owner`` the driver, cancelling (and so cleaning up after) an abandoned one."""
        if self.ctx is None:
            raise RuntimeError("the engine is closed")
        previous = self._owner
        if previous is not None and previous is not owner:
            if previous.running:
                raise RuntimeError("another generation is still running on this engine")
            previous.cancel()
        self._owner = owner
        self._interrupt.clear()  # an interrupt meant for the previous owner's last decode

    def unstage(self) -> None:
        """Give up the staged lead: the part of it already decoded stays cached."""
        self._lead_cells.clear()

    def release(self, owner: Owner) -> None:
        """``owner`` is done; a lead it staged and never decoded is forgotten (only what is cached is shared), and
        so is an interrupt that came after its last decode."""
        if self._owner is owner:
            self._owner = None
            self._lead_cells.clear()
            self._interrupt.clear()

    # sequences

    def fork(self, seq: int) -> None:
        """Give ``seq`` the cached prompt (shared cells, no copy of the data)."""
        self._lib.llama_memory_seq_cp(self._mem, CACHE_SEQ, seq, -1, -1)

    def drop(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def _forget_cache(self) -> None:
        self.drop(CACHE_SEQ)
        self._truncate_cache(0)
        self._lead_cells.clear()

    def _truncate_cache(self, n: int) -> None:
        del self.cached[n:]
        del self._cell_ids[n:]

    def _extend_cache(self, tokens: Sequence[int]) -> None:
        self.cached.extend(tokens)
        staged = self._lead_cells[:len(tokens)]
        del self._lead_cells[:len(tokens)]
        self._cell_ids.extend(staged)
        self._cell_ids.extend(self._new_cells(len(tokens) - len(staged)))

    def cells(self, n: int | None = None) -> frozenset[int]:
        """Ids of the KV cells holding the first ``n`` (default: all) cached positions."""
        return frozenset(self._cell_ids[:n])

    def reusable(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of ``prompt`` ``stage`` would take from the cache, or, while a lead
        is staged, ``stage_beside`` from the cache and the lead."""
        source = self._lead if self._lead_cells else self.cached
        return min(_common_prefix(source, prompt), len(prompt) - 1)

    def _new_cells(self, n: int) -> range:
        """Ids for ``n`` cells about to be evaluated."""
        cells = range(self._next_cell, self._next_cell + n)
        self._next_cell += n
        return cells

    # decoding

    def interrupt(self) -> None:
        """From any thread: stop the decode in flight, or the next one, within a graph node (it raises
        ``Interrupted``)."""
        self._interrupt.set()

    def decode(self, entries: Sequence[Entry], *, prompt: bool) -> None:
        """One llama_decode of ``entries``; the logits of entry i are then at output index i. ``prompt``:
        it evaluates prompt tokens (the "prompt" phase of the thread tuner), not only next tokens.

        Entries of the cache sequence must continue the cached prompt; they extend it once decoded
        (a failed decode forgets the cache, as its cells are then uncertain). An interrupted decode
        raises ``Interrupted`` with every sequence as it was before it, so it can be run again; Ctrl-C
        stops it too, and its KeyboardInterrupt leaves the context put back the same way.
        """
        batch = self._batch
        token, pos, n_seq_id, seq_id, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        for i, (tok, p, seqs, out) in enumerate(entries):
            token[i] = tok
            pos[i] = p
            n_seq_id[i] = len(seqs)
            ids = seq_id[i]
            for j, seq in enumerate(seqs):
                ids[j] = seq
            logits[i] = out
        batch.n_tokens = len(entries)
        cached = [tok for tok, _, seqs, _ in entries if CACHE_SEQ in seqs]
        phase, started = self.threads.start(prompt)
        try:
            with self._interrupt.on_ctrl_c():
                rc = self._lib.llama_decode(self.ctx, batch)
        except BaseException:  # Ctrl-C's KeyboardInterrupt, raised as the decode it stopped returned
            self._undo(entries)
            raise
        if rc == 0:
            self._lib.llama_synchronize(self.ctx)  # a GPU backend returns before the work is done
            self.threads.stop(phase, started, len(entries))
        if rc == _ABORTED:  # an interrupt that came between two decodes stops the next one: none is lost
            self._undo(entries)
            raise Interrupted
        if rc != 0 and cached:
            self._forget_cache()
        if rc == 1:
            raise ContextFull(self.n_ctx)
        if rc != 0:
            raise DecodeFailed(rc)
        self._extend_cache(cached)

    def _undo(self, entries: Sequence[Entry]) -> None:
        """Put the context back as before a stopped decode of ``entries``: its interrupt is spent, and each
        sequence loses what the decode left in the cache (the micro-batches it finished), the positions from
        its first in ``entries`` on."""
        self._interrupt.clear()
        starts: dict[int, int] = {}
        for _, pos, seqs, _ in entries:
            for seq in seqs:
                starts[seq] = min(pos, starts.get(seq, pos))
        for seq, start in starts.items():
            self._lib.llama_memory_seq_rm(self._mem, seq, start, -1)

    def stage(self, prompt: Sequence[int]) -> tuple[list[Entry], int]:
        """Make the cache sequence hold the longest prefix of ``prompt`` it can reuse.

        Returns (the entries that evaluate the rest, the last one asking for logits; the number of
        reused tokens). The last token is always evaluated so its logits are fresh.
        """
        reuse = self.reusable(prompt)
        if not self._lib.llama_memory_seq_rm(self._mem, CACHE_SEQ, reuse, -1):
            self._forget_cache()
            reuse = 0
        self._truncate_cache(reuse)
        self._lead = prompt
        self._lead_cells = list(self._new_cells(len(prompt) - reuse))
        return _entries(prompt, reuse, (CACHE_SEQ,)), reuse

    def stage_beside(self, prompt: Sequence[int], seqs: Sequence[int],
                     lead: list[Entry]) -> tuple[list[Entry], int, frozenset[int]]:
        """Start ``prompt`` in ``seqs`` beside the lead, whose remaining entries are ``lead``: the prefix
        they share comes from the cache, and from the lead's entries, which gain ``seqs``; the rest
        is evaluated once for all of ``seqs``.

        Returns (the entries that evaluate the rest, the last one asking for logits; the number of
        reused tokens; the ids of the cells the prompt occupies once decoded).
        """
        shared = self.reusable(prompt)
        cached = min(shared, len(self.cached))
        for seq in seqs:
            self._lib.llama_memory_seq_cp(self._mem, CACHE_SEQ, seq, 0, cached)
        for i in range(shared - cached):
            tok, pos, owners, out = lead[i]
            lead[i] = (tok, pos, (*owners, *seqs), out)
        cells = self.cells(cached).union(self._lead_cells[:shared - cached], self._new_cells(len(prompt) - shared))
        return _entries(prompt, shared, tuple(seqs)), shared, cells

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits of every position, float32 (len(tokens), n_vocab)."""
        import numpy as np

        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        step = min(self.n_batch, LOGITS_CHUNK)
        self._forget_cache()
        try:
            for start in range(0, len(tokens), step):
                chunk = tokens[start:start + step]
                self.decode([(tok, start + i, (CACHE_SEQ,), True) for i, tok in enumerate(chunk)], prompt=True)
                rows = np.ctypeslib.as_array(self._lib.llama_get_logits(self.ctx), shape=(len(chunk), self.n_vocab))
                out[start:start + len(chunk)] = rows
        except BaseException:
            self._forget_cache()
            raise
        return out

    def logits_ptr(self, output_index: int) -> object:
        """Pointer to one output's logits, to edit a few entries in place before sampling."""
        return self._lib.llama_get_logits_ith(self.ctx, output_index)

    def close(self) -> None:
        if self.ctx is not None:
            self.claim(None)
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None


def _entries(prompt: Sequence[int], start: int, seqs: tuple[int, ...]) -> list[Entry]:
    """Entries evaluating ``prompt[start:]`` in ``seqs``, logits for the last token only."""
    last = len(prompt) - 1
    return [(prompt[p], p, seqs, p == last) for p in range(start, len(prompt))]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


