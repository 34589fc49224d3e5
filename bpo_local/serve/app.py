"""The ASGI app: settings, the routes table, and the lifespan that owns the engine and the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ..optimizer import Optimizer
from . import routes
from .auth import BearerAuth
from .errors import HANDLERS
from .owner import EngineOwner
from .proxy import Upstream


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


@dataclass
class State:
    """What every route reads: the settings, the engine's owner, and the upstream (if any)."""

    settings: Settings
    owner: EngineOwner
    upstream: Upstream | None


ROUTES = [
    Route("/health", routes.health, methods=["GET"]),
    Route("/v1/models", routes.models, methods=["GET"]),
    Route("/v1/optimize", routes.optimize, methods=["POST"]),
    Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
    Route("/v1/completions", routes.completions, methods=["POST"]),
]


def create_app(optimizer: Optimizer, settings: Settings) -> Starlette:
    """The server for ``optimizer``; its engine is driven by one owner thread from startup to shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owner = EngineOwner(optimizer, parallel=settings.parallel, queue_size=settings.queue_size,
                            max_tokens=settings.max_tokens, log=settings.log)
        owner.start()
        upstream = None
        if settings.upstream:
            upstream = Upstream(settings.upstream, key=settings.upstream_key,
                                pass_client_key=settings.api_key is None, timeout=settings.upstream_timeout)
        app.state.bpo = State(settings, owner, upstream)
        try:
            yield
        finally:
            owner.stop()
            if upstream is not None:
                await upstream.aclose()

    middleware = [Middleware(BearerAuth, key=settings.api_key)] if settings.api_key else []
    return Starlette(routes=ROUTES, middleware=middleware, exception_handlers=HANDLERS,  # type: ignore[arg-type]
                     lifespan=lifespan)
