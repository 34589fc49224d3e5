"""Plain data the engine takes and returns. Nothing here knows about BPO."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import BpoLocalError

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
class Timings:
    prompt_tokens: int
    cached_prompt_tokens: int
    prompt_seconds: float
    first_token_seconds: float
    generated_tokens: int
    decode_seconds: float
    total_seconds: float

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
    """What ``doctor`` and the REPL banner show about a loaded model."""

    path: Path
    size_bytes: int
    architecture: str
    name: str
    n_params: int
    file_type: str
    n_ctx_train: int
    n_ctx: int
    n_layer: int
    gpu_layers: int
    backend: str
    chat_template: str | None
    metadata: dict[str, str] = field(default_factory=dict)
