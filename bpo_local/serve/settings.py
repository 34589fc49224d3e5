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
    """On SIGTERM, how long requests in flight may take to finish before they are answered as cut short."""
    rewrite_timeout: float | None = 30.0
    """How long the proxy's rewrite of a turn may take before it is stopped and the original goes (None: no
    limit). 30 s: BPO's rewrites of its test set are 27 tokens at the median and 110 at the 95th percentile
    (Llama-2 tokens); a 7B Q4_K_M decodes about 6-10 tokens/s on a laptop's CPU, so 95 of 100 rewrites finish
    in 12-22 s with the prompt read, while a rewrite that rambles to the token cap is cut short."""
    tasks: str = "pass"
    """Apps' own requests (titles, tags, follow-up suggestions): "pass" them upstream untouched, or "rewrite"
    them as if a person had asked."""
    show_rewrite: bool = False
    """Begin each rewritten answer with a collapsible block showing the rewrite (X-BPO-Show-Rewrite overrides)."""
