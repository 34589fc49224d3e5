"""What the operator fixed for ``bpo-local serve``, with the defaults every face shows."""

from __future__ import annotations

from dataclasses import dataclass

from .store import DEFAULT_CAPACITY


@dataclass(frozen=True)
class Settings:
    """What the operator fixed: the default preset, how many optimizations decode together, the queue,
    the limits, the key clients must send, and the upstream (None: BPO itself is the model)."""

    mode: str | None = None
    """The preset where a request names none (None: the model's own, else stable)."""
    seed: int | None = None
    """BPO's seed where a request gives none (the proxy's rewrites always); None: random."""
    parallel: int = 4
    queue_size: int = 64
    max_tokens: int = 1024
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    upstream: str | None = None
    upstream_key: str | None = None
    upstream_timeout: float = 300.0
    log: bool = True
    turns: str = "first"
    """Which user turns the proxy rewrites: a conversation's "first" only, or "all" (X-BPO-Turns overrides)."""
    history: str = "rewritten"
    """Earlier user turns go upstream as their stored rewrites ("rewritten") or as typed ("original")."""
    store_size: int = DEFAULT_CAPACITY
    """The most rewrites the proxy's store keeps (least recently used go first)."""
    max_n: int = 8
    """The most candidates one request may ask BPO for (aggressive mode's 5, and some room)."""
    max_prompts: int = 64
    """The most prompts one /v1/optimize request may hold."""
    grace: float = 10.0
    """On SIGTERM, how long requests in flight may take to finish before they are cancelled."""
