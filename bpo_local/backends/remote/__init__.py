"""Remote backends: BPO's requests on llama.cpp's ``llama-server`` or vLLM, over one or many servers.

    backend = connect(["http://gpu1:8080", "http://gpu2:8080"])   # kind detected per server
    backend.generate_many(requests, max_sequences=4)              # spread, retried, each once

Each server is probed once: llama-server answers ``/props``, vLLM ``/version``; all servers of a
fleet must be of one kind. See ``llama_server`` and ``vllm`` for each request shape and what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ServerError, UsageError
from .backend import RemoteBackend
from .endpoint import Endpoint, ServerFacts
from .fleet import Fleet
from .http import Server
from .llama_server import KIND as LLAMA_SERVER
from .llama_server import LlamaServerEndpoint
from .vllm import KIND as VLLM
from .vllm import VllmEndpoint


@dataclass(frozen=True)
class ServerKind:
    """A dialect: what it is called, the GET that tells it apart, and the endpoint class that speaks it."""

    name: str
    title: str
    path: str
    answers: Callable[[Any], bool]
    """Whether the reply to ``path`` is this kind's (a 404 is None)."""
    endpoint: Callable[[Server, Any], Endpoint]


SERVER_KINDS = (
    ServerKind(LLAMA_SERVER, "llama.cpp's llama-server", "/props",
               lambda reply: isinstance(reply, dict) and "default_generation_settings" in reply, LlamaServerEndpoint),
    ServerKind(VLLM, "vLLM", "/version", lambda reply: isinstance(reply, dict) and "version" in reply, VllmEndpoint),
)
"""Tried in order; a new dialect is one module and one row."""
KINDS = tuple(kind.name for kind in SERVER_KINDS)

__all__ = ["KINDS", "SERVER_KINDS", "Fleet", "RemoteBackend", "Server", "ServerFacts", "ServerKind", "connect", "probe"]


def probe(url: str, *, kind: str | None = None, api_key: str | None = None, timeout: float | None = None) -> Endpoint:
    """Connect to one server: its kind (detected unless given), model and tokenizer facts."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown server kind {kind!r}; known: {', '.join(KINDS)}")
    server = Server(url, api_key=api_key, timeout=timeout)
    try:
        candidates = [k for k in SERVER_KINDS if kind in (None, k.name)]
        for candidate in candidates:
            reply = server.get(candidate.path, missing_ok=True)
            if candidate.answers(reply):
                return candidate.endpoint(server, reply)
        if kind is not None:
            raise ServerError(f"{server.url} is not a {kind} (it does not answer {candidates[0].path} as one)")
        known = " nor ".join(f"{k.title} ({k.path})" for k in SERVER_KINDS)
        raise ServerError(f"{server.url} is neither {known}; "
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
