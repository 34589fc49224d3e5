"""``bpo-local serve``: BPO as an OpenAI-compatible server, or as a proxy in front of any LLM.

    app = create_app(bpo_local.load(), Settings(upstream="http://127.0.0.1:11434/v1"))

One chat pipeline (``chat``) under per-API dialects (``dialects/``: OpenAI chat, Responses, Anthropic
Messages, Ollama): turn rules (``turns``, ``store``, ``rewrite``), then the upstream (``proxy``) or BPO's own
answer (``bpo_answer``, through ``owner``, the one thread that drives the engine). ``app`` holds the routes
table and the lifespan; ``auth``, ``errors`` and ``handlers`` answer failures in each API's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import Settings

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # the ASGI stack loads only when a server is made
        from .app import create_app

        return create_app
    raise AttributeError(name)
