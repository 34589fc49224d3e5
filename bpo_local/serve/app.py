"""The ASGI app: the routes table, and the lifespan that owns the engine and the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ..optimizer import Optimizer
from . import chat, ollama_routes, routes
from .auth import KeyAuth
from .dialects import ANTHROPIC, OLLAMA_CHAT, OPENAI_CHAT, RESPONSES
from .handlers import HANDLERS
from .owner import EngineOwner
from .proxy import Upstream
from .request_log import RequestLog
from .settings import Settings
from .state import State
from .store import RewriteStore
from .turns import Rewriter

ROUTES = [
    Route("/health", routes.health, methods=["GET"]),
    Route("/v1/models", routes.models, methods=["GET"]),
    Route("/v1/optimize", routes.optimize, methods=["POST"]),
    Route("/v1/chat/completions", chat.endpoint(OPENAI_CHAT), methods=["POST"]),
    Route("/v1/responses", chat.endpoint(RESPONSES), methods=["POST"]),
    Route("/v1/messages", chat.endpoint(ANTHROPIC), methods=["POST"]),
    Route("/v1/completions", routes.completions, methods=["POST"]),
    Route("/api/chat", chat.endpoint(OLLAMA_CHAT), methods=["POST"]),
    Route("/api/generate", ollama_routes.generate, methods=["POST"]),
    Route("/api/tags", ollama_routes.tags, methods=["GET"]),
    Route("/api/show", ollama_routes.show, methods=["POST"]),
    Route("/api/version", ollama_routes.version, methods=["GET"]),
    Route("/api/ps", ollama_routes.ps, methods=["GET"]),
    Route("/api/embed", ollama_routes.embed, methods=["POST"]),
]
PASSTHROUGH = Route("/v1/{path:path}", routes.passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
"""In proxy mode, every other /v1 route (embeddings, /v1/messages/count_tokens, stored responses, ...) goes to
the upstream unchanged."""


def _rewriter(optimizer: Optimizer, owner: EngineOwner, settings: Settings) -> Rewriter:
    """The proxy's turn rules with the store under the data folder; BPO's build is its file's digest
    (hashed once, cached across runs), or the servers' model."""
    info = optimizer.info
    build = optimizer.model_sha256() or f"{info.backend} {info.name}"
    return Rewriter(owner, RewriteStore.open(capacity=settings.store_size), build, settings.seed, settings.history,
                    settings.rewrite_timeout)


def create_app(optimizer: Optimizer, settings: Settings) -> Starlette:
    """The server for ``optimizer``; its engine is driven by one owner thread from startup to shutdown."""
    settings = replace(settings, mode=settings.mode or optimizer.default_preset)

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
                await upstream.check()
            app.state.bpo = State(settings, owner, upstream, rewriter)
            yield
        finally:
            owner.stop()
            if upstream is not None:
                await upstream.aclose()
            if rewriter is not None and rewriter.store is not None:
                rewriter.store.close()

    middleware = [Middleware(RequestLog), *([Middleware(KeyAuth, key=settings.api_key)] if settings.api_key else [])]
    table = [*ROUTES, PASSTHROUGH] if settings.upstream else ROUTES
    return Starlette(routes=table, middleware=middleware, exception_handlers=HANDLERS,  # type: ignore[arg-type]
                     lifespan=lifespan)
