"""The neutral backend contract: what a generation backend takes, returns and must provide.

The local llama.cpp engine and every remote client implement ``Backend``; the optimizer speaks only
this module. Nothing here knows about BPO, and nothing here imports a backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from .errors import BpoLocalError

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Sampling:
    """Sampling in transformers' order: temperature, then top-k, then top-p, then the draw.

    ``temperature == 0`` means greedy. ``top_k == 0``, ``top_p == 1`` and ``min_p == 0`` are off.
    ``seed`` None picks a random seed, reported back in the result so the run can be reproduced.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class Request:
    """Generate ``n`` continuations of one prompt, which is evaluated once and shared."""

    prompt: tuple[int, ...]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    n: int = 1
    stop_tokens: frozenset[int] = frozenset()
    """Tokens that end a sequence; they are not part of its output."""
    min_new_tokens: int = 0
    """Before this many new tokens, ``stop_tokens`` cannot be sampled."""
    banned: tuple[tuple[int, ...], ...] = ()
    """transformers ``bad_words_ids``: the last token of each sequence is banned when the tokens
    before it are the sequence's last generated tokens; one-token sequences are always banned."""


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token of candidate ``index``; ``text`` is its decoded piece (may be empty
    while a multi-byte character is incomplete)."""

    index: int
    token: int
    text: str


@dataclass(frozen=True)
class Completion:
    index: int
    tokens: tuple[int, ...]
    text: str
    finish_reason: FinishReason


@dataclass(frozen=True)
class ThreadChoice:
    """The CPU threads a local engine ran one phase on ("decode" or "prompt") when a request ended, and why."""

    phase: str
    threads: int
    why: str


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int
    cached_prompt_tokens: int
    prompt_seconds: float
    first_token_seconds: float
    generated_tokens: int
    decode_seconds: float
    total_seconds: float
    threads: tuple[ThreadChoice, ...] = ()
    """Local engines: each phase's thread count (empty for a remote backend)."""

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


@dataclass(frozen=True)
class GenerationResult:
    completions: tuple[Completion, ...]
    timings: Timings
    seed: int


@dataclass(frozen=True)
class RequestDone:
    """Request ``index`` of a ``generate_many`` finished: its ``result``, or the ``error`` that kept it
    from starting (e.g. a prompt longer than the context); the other requests go on."""

    index: int
    result: GenerationResult | None = None
    error: BpoLocalError | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What results, logs, ``doctor`` and the REPL banner say about the model a backend serves.

    ``name`` is how results and the run log name the model (a GGUF's file name, a server's model id);
    the local-file facts (``path``, size, quant, layers) are unknown (None, 0) for a remote model.
    """

    name: str
    n_ctx: int
    backend: str
    """Where it runs: "CPU", "CUDA", or a server's kind and address."""
    path: Path | None = None
    title: str = ""
    """The model's own name (GGUF ``general.name``), if it has one."""
    size_bytes: int = 0
    architecture: str = "unknown"
    n_params: int = 0
    file_type: str = ""
    n_ctx_train: int = 0
    n_layer: int = 0
    gpu_layers: int = 0
    chat_template: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    """A GGUF's key/values; for a server, what it says of itself (``url``, ``kind``, ``version``, ``slots``)
    of the first server."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend reproduces exactly. Where one is False the optimizer adapts explicitly (and says
    so in the result) or refuses with an error naming the setting; it never changes semantics silently.
    """

    sampler_order: bool = True
    """Sampling runs temperature, then top-k, then top-p, then the draw (transformers' order)."""
    min_new_tokens: bool = True
    """``Request.min_new_tokens`` holds the stop tokens back exactly (natively or in two phases)."""
    multi_token_bans: bool = True
    """``Request.banned`` sequences longer than one token are honoured (one-token bans always are)."""
    n_candidates: bool = True
    """``Request.n > 1``: candidates k use seeds seed+k (or the server's own per-candidate seeding)."""
    token_prompts: bool = True
    """``Request.prompt`` token ids are evaluated as given (no BOS added, no re-tokenization)."""
    notes: tuple[str, ...] = ()
    """How the backend reaches these (e.g. "min-length in two phases"), for doctor and the docs."""


class Generation(Protocol):
    """A running generation: iterate for token events; ``result`` once finished or cancelled."""

    result: GenerationResult

    def __iter__(self) -> Iterator[TokenEvent]: ...

    def cancel(self) -> None: ...


class BatchGeneration(Protocol):
    """Several requests in flight: (request index, token event) per token, RequestDone per request."""

    def __iter__(self) -> Iterator[tuple[int, TokenEvent] | RequestDone]: ...

    def cancel(self) -> None: ...

    def cancel_request(self, index: int) -> None:
        """Stop request ``index`` alone (it ends "cancelled", its RequestDone follows); the others go on. Safe
        from any thread."""
        ...


class Backend(Protocol):
    """What a generation backend provides: a tokenizer, token-level generation, and its model's facts."""

    info: ModelInfo
    eos_token: int
    capabilities: Capabilities

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int], *, skip_special: bool = True) -> str: ...

    def token_for_piece(self, piece: str) -> int | None: ...

    def generate(self, request: Request) -> Generation: ...

    def generate_many(self, requests: Iterable[Request | None], *, max_sequences: int | None = None) -> BatchGeneration:
        """Decode ``requests`` together as they come; a None from the iterable means "nothing to start
        now" (the live ones go on; with none live it is asked again at once, so it should wait)."""
        ...

    def close(self) -> None: ...
