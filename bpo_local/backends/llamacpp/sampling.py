"""Sampler chains in transformers' order, seeds, and transformers-style token bans."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from ...backend import Request, Sampling
from ...errors import UsageError
from .native import llama

_SEED_MODULUS = 0xFFFFFFFF
"""Seeds live in [0, 2**32 - 1): llama.cpp reads 0xFFFFFFFF (LLAMA_DEFAULT_SEED) as "random"."""


def random_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def sequence_seed(seed: int, index: int) -> int:
    """Sequence ``index`` of a request draws with ``seed + index``."""
    return (seed + index) % _SEED_MODULUS


def validate(request: Request) -> None:
    """Reject settings the sampler cannot honour, naming the setting and the valid range."""
    s = request.sampling
    checks = (
        (s.temperature >= 0, f"temperature must be >= 0 (got {s.temperature})"),
        (0 < s.top_p <= 1, f"top_p must be in (0, 1] (got {s.top_p})"),
        (s.top_k >= 0, f"top_k must be >= 0, 0 = off (got {s.top_k})"),
        (0 <= s.min_p <= 1, f"min_p must be in [0, 1] (got {s.min_p})"),
        (request.n >= 1, f"n must be at least 1 (got {request.n})"),
        (request.max_new_tokens >= 1, f"max_new_tokens must be at least 1 (got {request.max_new_tokens})"),
        (len(request.prompt) >= 1, "the prompt is empty; give it at least one token"),
    )
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


class SamplerChain:
    """One llama.cpp sampler chain: temperature -> top-k -> top-p -> min-p -> draw, or greedy.

    That is transformers' warper order (llama-cpp-python's ``Llama`` applies temperature last).
    """

    def __init__(self, sampling: Sampling, seed: int) -> None:
        lib = llama()
        self._lib = lib
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        self.ptr = lib.llama_sampler_chain_init(params)
        if sampling.temperature == 0:
            lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_greedy())
            return
        lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_temp(sampling.temperature))
        if sampling.top_k > 0:
            lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1:
            lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0:
            lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_min_p(sampling.min_p, 1))
        lib.llama_sampler_chain_add(self.ptr, lib.llama_sampler_init_dist(seed))

    def sample(self, ctx: object, output_index: int) -> int:
        return self._lib.llama_sampler_sample(self.ptr, ctx, output_index)

    def close(self) -> None:
        if self.ptr is not None:
            self._lib.llama_sampler_free(self.ptr)
            self.ptr = None


class Bans:
    """transformers ``bad_words_ids``: a one-token sequence is always banned; for a longer one its
    last token is banned when the sequence's other tokens end the input (prompt + generated so far)."""

    def __init__(self, banned: Iterable[Sequence[int]]) -> None:
        sequences = [tuple(b) for b in banned if b]
        self.always = frozenset(b[0] for b in sequences if len(b) == 1)
        self._rules = tuple((b[:-1], b[-1]) for b in sequences if len(b) > 1)
        self.history_needed = max((len(prefix) for prefix, _ in self._rules), default=0)

    def __bool__(self) -> bool:
        return bool(self.always or self._rules)

    def banned_now(self, history: Sequence[int]) -> set[int]:
        """Tokens banned for the next step given the input so far (only its tail is looked at)."""
        banned = set(self.always)
        for prefix, last in self._rules:
            if len(history) >= len(prefix) and tuple(history[len(history) - len(prefix):]) == prefix:
                banned.add(last)
        return banned
