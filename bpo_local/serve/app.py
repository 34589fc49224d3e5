"""The ASGI app: settings, the routes table, and the lifespan that owns the engine and the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ..optimizer import Optimizer
from . import ollama_routes, routes
from .auth import BearerAuth
from .errors import HANDLERS
from .owner import EngineOwner
from .proxy import Upstream
from .store import DEFAULT_CAPACITY, RewriteStore
from .turns import Rewriter


@dataclass(frozen=True)
class Settings:
    """What the operator fixed: BPO's default mode, how many optimizations decode together, the queue,
    the limits, the key clients must send, and the upstream (None: BPO itself is the model)."""

    mode: str = "stable"
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


@dataclass
class State:
    """What every route reads: the settings, the engine's owner, and the upstream with the proxy's
    turn rules (if any)."""

    settings: Settings
    owner: EngineOwner
    upstream: Upstream | None
    rewriter: Rewriter | None = None


ROUTES = [
    Route("/health", routes.health, methods=["GET"]),
    Route("/v1/models", routes.models, methods=["GET"]),
    Route("/v1/optimize", routes.optimize, methods=["POST"]),
    Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
    Route("/v1/completions", routes.completions, methods=["POST"]),
    Route("/api/chat", ollama_routes.chat, methods=["POST"]),
    Route("/api/generate", ollama_routes.generate, methods=["POST"]),
    Route("/api/tags", ollama_routes.tags, methods=["GET"]),
    Route("/api/show", ollama_routes.show, methods=["POST"]),
    Route("/api/version", ollama_routes.version, methods=["GET"]),
]
PASSTHROUGH = Route("/v1/{path:path}", routes.passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
"""In proxy mode, every other /v1 route goes to the upstream."""


def _rewriter(optimizer: Optimizer, owner: EngineOwner, settings: Settings) -> Rewriter:
    """The proxy's turn rules with the store under the data folder; BPO's build is its file's digest
    (hashed once, cached across runs), or the servers' model."""
    info = optimizer.info
    build = optimizer.model_sha256() or f"{info.backend} {info.name}"
    return Rewriter(owner, RewriteStore.open(capacity=settings.store_size), build, settings.seed, settings.history)


def create_app(optimizer: Optimizer, settings: Settings) -> Starlette:
    """The server for ``optimizer``; its engine is driven by one owner thread from startup to shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owner = EngineOwner(optimizer, parallel=settings.parallel, queue_size=settings.queue_size,
                            max_tokens=settings.max_tokens, log=settings.log)
        owner.start()
        upstream = rewriter = None
        try:
            if settings.upstream:
                rewriter = _rewriter(optimizer, owner, settings)
                upstream = Upstream(settings.upstream, key=settings.upstream_key,
                                    pass_client_key=settings.api_key is None, timeout=settings.upstream_timeout)
            app.state.bpo = State(settings, owner, upstream, rewriter)
            yield
        finally:
            owner.stop()
            if upstream is not None:
                await upstream.aclose()
            if rewriter is not None and rewriter.store is not None:
                rewriter.store.close()

    middleware = [Middleware(BearerAuth, key=settings.api_key)] if settings.api_key else []
    table = [*ROUTES, PASSTHROUGH] if settings.upstream else ROUTES
    return Starlette(routes=table, middleware=middleware, exception_handlers=HANDLERS,  # type: ignore[arg-type]
                     lifespan=lifespan)
