"""Engine: a GGUF model loaded with llama.cpp's C API, ready to tokenize, generate and score."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...backend import Capabilities, ModelInfo, Request, RequestDone
from ...errors import (
    BpoLocalError,
    ContextTooBig,
    InvalidSetting,
    LlamaCppRefused,
    ModelIsFolder,
    ModelLoadError,
    ModelNotFound,
    PromptTooLong,
    UsageError,
)
from . import buffers, sampling
from .context import Context
from .generation import BatchGeneration, Generation
from .gguf_check import check_gguf
from .info import model_info
from .job import Job
from .native import llama, set_verbose
from .system import gpu_backend, physical_cores
from .threads import Tuner
from .vocab import Vocab

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_CTX = 4096
GGUF_MAGIC = b"GGUF"

DEFAULT_SEQ_MAX = 65
"""64 sequences decoding together and the prompt cache (llama.cpp allows 256 in all)."""


class Engine:
    """One model and one context. Not thread-safe: drive one generation at a time.

    ``n_gpu_layers`` None offloads every layer when the build supports a GPU, else 0 (CPU);
    ``n_threads`` pins the CPU threads; None tunes them per phase between 1 and the physical cores
    (see ``threads``); ``n_ctx`` None is the training context capped at 4096;
    ``n_seq_max`` bounds the sequences decoded together, plus one that holds the prompt cache; the KV
    cache is one pool of ``n_ctx`` cells whatever the count, so a sequence slot costs only its logits row;
    ``cpu_buffers`` says which extra CPU weight buffer types llama.cpp may use (see ``buffers``).
    """

    def __init__(self, path: str | os.PathLike, *, n_ctx: int | None = None, n_gpu_layers: int | None = None,
                 n_threads: int | None = None, n_seq_max: int = DEFAULT_SEQ_MAX, cpu_buffers: buffers.Policy = "auto",
                 verbose: bool = False) -> None:
        _check_settings(n_ctx=n_ctx, n_threads=n_threads, n_seq_max=n_seq_max, cpu_buffers=cpu_buffers)
        path = Path(path)
        _check_file(path)
        lib = llama()
        set_verbose(verbose)
        self._lib = lib
        self._model = None
        self._context: Context | None = None
        gpu = gpu_backend()
        if n_gpu_layers is None:
            n_gpu_layers = -1 if gpu else 0
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.buffers = buffers.apply(cpu_buffers, params)
        self._model = lib.llama_model_load_from_file(os.fsencode(path), params)
        if not self._model:
            raise LlamaCppRefused(path.name, gpu if gpu and n_gpu_layers != 0 else None)
        try:
            self._vocab = Vocab(lib.llama_model_get_vocab(self._model))
            n_layer = lib.llama_model_n_layer(self._model)
            offloaded = 0 if gpu is None else n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
            self._context = self._new_context(path, n_ctx, n_threads, n_seq_max, cpu_attention=offloaded <= n_layer)
            self.info: ModelInfo = model_info(self._model, path, n_ctx=self._context.n_ctx, gpu_layers=offloaded,
                                              backend=gpu if gpu and offloaded else "CPU")
        except BaseException:
            self.close()
            raise
        self.bos_token: int | None = self._vocab.bos_token
        self.eos_token: int = self._vocab.eos_token
        self.capabilities = Capabilities(notes=("llama.cpp in this process: every setting natively",))

    def _new_context(self, path: Path, n_ctx: int | None, n_threads: int | None, n_seq_max: int, *,
                     cpu_attention: bool) -> Context:
        """``cpu_attention``: some layers run on the CPU, where flash attention is off. Its CPU kernel splits
        a one-token decode's keys (from 512 on) between the threads, so its rounding, and the tokens,
        would depend on the thread count, which the tuner changes; without it no op's result does, and
        decoding is as fast (it is 1.1x slower on long prompts: benchmarks/README.md)."""
        lib = self._lib
        train = lib.llama_model_n_ctx_train(self._model)
        if n_ctx is None:
            n_ctx = min(train, DEFAULT_MAX_CTX) if train > 0 else DEFAULT_MAX_CTX
        most = physical_cores()
        threads = n_threads or most
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = min(params.n_batch, n_ctx)
        params.n_ubatch = min(params.n_ubatch, params.n_batch)
        params.n_seq_max = min(n_seq_max, params.n_batch)  # llama.cpp keeps an output row per sequence in a batch
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True
        if cpu_attention:
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise ContextTooBig(path.name, n_ctx)
        return Context(ctx, self._vocab.n_vocab, most_threads=most, pinned_threads=n_threads)

    # tokenizer

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = False) -> list[int]:
        self._live_context()
        return self._vocab.tokenize(text, add_bos=add_bos, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int], *, skip_special: bool = True) -> str:
        self._live_context()
        return self._vocab.detokenize(tokens, skip_special=skip_special)

    def token_for_piece(self, piece: str) -> int | None:
        self._live_context()
        return self._vocab.token_for_piece(piece)

    @property
    def threads(self) -> Tuner:
        """The thread tuner: each phase's count and why (``choices()``); ``reconsider()`` retries them now."""
        return self._live_context().threads

    @property
    def n_vocab(self) -> int:
        return self._vocab.n_vocab

    @property
    def eog_tokens(self) -> frozenset[int]:
        """Every end-of-generation token of the vocabulary (EOS, EOT, <|im_end|>, ...)."""
        return self._vocab.eog_tokens

    # inference

    def generate(self, request: Request) -> Generation:
        """A lazy Generation of ``request``; nothing is evaluated until it is iterated."""
        job = self._job(0, request)
        return Generation(BatchGeneration(self._live_context(), iter([job]), None), job)

    def generate_many(self, requests: Iterable[Request | None], *, max_sequences: int | None = None) -> BatchGeneration:
        """Continuous batching: a lazy BatchGeneration of ``requests``, decoded together.

        ``requests`` may yield None for "nothing to start now" (see BatchGeneration), so a server can
        feed it from a queue; ``cancel_request(index)`` stops one request and leaves the others running.

        Each request is generated exactly as ``generate`` would (its own seeds, bans, stops, limits
        and timings); at most ``max_sequences`` sequences are live at once (None: every slot). A
        request that cannot start (e.g. its prompt is longer than the context) is reported by a
        ``RequestDone`` carrying the error; the others go on.
        """
        if max_sequences is not None and max_sequences < 1:
            raise UsageError(f"max_sequences must be at least 1 (got {max_sequences})")
        return BatchGeneration(self._live_context(), self._jobs(requests), max_sequences)

    def _jobs(self, requests: Iterable[Request | None]) -> Iterator[Job | RequestDone | None]:
        index = 0
        for request in requests:
            if request is None:  # nothing to start now
                yield None
                continue
            try:
                yield self._job(index, request)
            except BpoLocalError as err:
                yield RequestDone(index, error=err)
            index += 1

    def _job(self, index: int, request: Request) -> Job:
        """Request ``index``, checked and seeded."""
        sampling.validate(request)
        self._check_fits(len(request.prompt))
        self._vocab.check_ids(request.prompt, "the prompt")
        self._vocab.check_ids([t for b in request.banned for t in b], "banned")
        self._vocab.check_ids(sorted(request.stop_tokens), "stop_tokens")
        seed = request.sampling.seed if request.sampling.seed is not None else sampling.random_seed()
        return Job(index, request, seed, self._live_context(), self._vocab)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Teacher-forced float32 logits of every position, shape (len(tokens), n_vocab)."""
        self._check_fits(len(tokens))
        self._vocab.check_ids(tokens, "tokens")
        context = self._live_context()
        context.claim(None)
        return context.logits(tokens)

    def _check_fits(self, n_tokens: int) -> None:
        n_ctx = self.info.n_ctx
        if n_tokens > n_ctx:
            raise PromptTooLong(n_tokens, n_ctx, n_ctx_train=self.info.n_ctx_train)

    def _live_context(self) -> Context:
        if self._context is None:
            raise RuntimeError("the engine is closed")
        return self._context

    # lifetime

    def close(self) -> None:
        """Free the context and the model (idempotent)."""
        if self._context is not None:
            self._context.close()
            self._context = None
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the bindings may be gone already
            self.close()


def _check_settings(*, n_ctx: int | None, n_threads: int | None, n_seq_max: int, cpu_buffers: str) -> None:
    if n_ctx is not None and n_ctx < 1:
        raise InvalidSetting("ctx", n_ctx)
    if n_threads is not None and n_threads < 1:
        raise InvalidSetting("threads", n_threads)
    if n_seq_max < 2:
        raise UsageError(f"n_seq_max must be at least 2: one sequence holds the prompt cache (got {n_seq_max})")
    if cpu_buffers not in buffers.POLICIES:
        raise UsageError(f"unknown CPU buffer policy {cpu_buffers!r}; choose from: {', '.join(buffers.POLICIES)}")


def _check_file(path: Path) -> None:
    """ModelNotFound / ModelLoadError with one actionable line, before llama.cpp sees the file."""
    if not path.exists():
        raise ModelNotFound(f"model file {path} does not exist; check the path or list builds with `bpo-local models`")
    if path.is_dir():
        raise ModelIsFolder(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelLoadError(f"cannot read model file {path}: {err.strerror}; check its permissions") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"model file {path.name} is truncated or not a GGUF file; re-download or rebuild it")
    try:
        check_gguf(path)
    except ValueError as err:
        raise ModelLoadError(f"model file {path.name} is damaged: {err}; re-download or rebuild it") from None
