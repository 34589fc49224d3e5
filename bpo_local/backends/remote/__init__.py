"""Remote backends: BPO's requests on llama.cpp's ``llama-server`` or vLLM, over one or many servers.

    backend = connect(["http://gpu1:8080", "http://gpu2:8080"])   # kind detected per server
    backend.generate_many(requests, max_sequences=4)              # spread, retried, each once

Each server is probed once: llama-server answers ``/props``, vLLM ``/version``; all servers of a
fleet must be of one kind. See ``llama_server`` and ``vllm`` for each request shape and what differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import ServerError, UsageError
from .backend import RemoteBackend
from .endpoint import Endpoint, ServerFacts
from .fleet import Fleet
from .http import Rejected, Server, Unreachable
from .llama_server import KIND as LLAMA_SERVER
from .llama_server import LlamaServerEndpoint
from .vllm import KIND as VLLM
from .vllm import VllmEndpoint

KINDS = (LLAMA_SERVER, VLLM)

__all__ = ["KINDS", "Fleet", "Rejected", "RemoteBackend", "Server", "ServerFacts", "Unreachable", "connect", "probe"]


def probe(url: str, *, kind: str | None = None, api_key: str | None = None, timeout: float | None = None) -> Endpoint:
    """Connect to one server: its kind (detected unless given), model and tokenizer facts."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown server kind {kind!r}; known: {', '.join(KINDS)}")
    server = Server(url, api_key=api_key, timeout=timeout)
    try:
        props = server.get("/props", missing_ok=True) if kind in (None, LLAMA_SERVER) else None
        if isinstance(props, dict) and "default_generation_settings" in props:
            return LlamaServerEndpoint(server, props)
        version = server.get("/version", missing_ok=True) if kind in (None, VLLM) else None
        if isinstance(version, dict) and "version" in version:
            return VllmEndpoint(server, version)
        if kind is not None:
            raise ServerError(f"{server.url} is not a {kind} (it does not answer {'/props' if kind == LLAMA_SERVER else '/version'} as one)")
        raise ServerError(f"{server.url} is neither llama.cpp's llama-server (/props) nor vLLM (/version); "
                          "llama-cpp-python's server cannot reproduce BPO's sampler order (temperature before top-p)")
    except BaseException:
        server.close()
        raise


def connect(urls: Sequence[str], *, kind: str | None = None, api_key: str | None = None,
            timeout: float | None = None) -> RemoteBackend:
    """A backend over every server in ``urls``; one that cannot be reached now is an error."""
    if not urls:
        raise UsageError("no server URL given")
    endpoints: list[Endpoint] = []
    try:
        for url in dict.fromkeys(urls):
            endpoints.append(probe(url, kind=kind, api_key=api_key, timeout=timeout))
        kinds = {e.facts.kind for e in endpoints}
        if len(kinds) > 1:
            raise UsageError(f"the servers are of different kinds ({', '.join(sorted(kinds))}); use one kind per run")
    except BaseException:
        for endpoint in endpoints:
            endpoint.server.close()
        raise
    return RemoteBackend(Fleet(endpoints))
