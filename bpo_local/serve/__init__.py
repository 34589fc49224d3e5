"""``bpo-local serve``: BPO as an OpenAI-compatible server, or as a proxy in front of any such server.

    app = create_app(bpo_local.load(), Settings(upstream="http://127.0.0.1:11434/v1"))

``app`` (routes, lifespan), ``owner`` (the one thread that drives the engine), ``openai`` (BPO's
results as OpenAI completions), ``proxy`` (the upstream), ``turns`` (which user turns the proxy rewrites),
``store`` (the rewrites it keeps), ``rewrite``, ``ollama`` and ``ollama_routes`` (Ollama's native API),
``parse``, ``auth``, ``errors``.
"""

from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
