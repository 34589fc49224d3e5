"""The one way to open BPO: what the user gave (a model path or store name, servers, the config file,
the environment) -> an ``Optimizer``.

    choice = choose_backend(model=None, servers=None)   # servers' URLs, or the GGUF file to load
    optimizer = open_optimizer(choice, Config(ctx=2048))   # settings not given: config.toml's

Every face opens BPO here (the CLI's commands, the REPL's /model, serve, eval, doctor); the public
``bpo_local.load`` and ``bpo_local.connect`` are its two halves for callers that know which one they
want. Choosing the backend class happens here and nowhere else, so ``optimizer.py`` speaks only
``backend.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .backend import Backend
from .config import Config, configured_server_key, configured_servers, load_config
from .errors import TwoBackends
from .models.resolve import resolve_model
from .optimizer import Optimizer

Choice = tuple[str, ...] | Path
"""What a user's options name: the servers' URLs, or the local GGUF file."""


def choose_backend(model: str | None = None, servers: Iterable[str] | str | None = None,
                   config: Config | None = None) -> Choice:
    """Resolve once what the user gave: the servers (given, else ``$BPO_LOCAL_SERVER``, else the config's,
    unless a model is named), else the model file (a path, a store name, ``$BPO_LOCAL_MODEL``, the
    config's, or the best build). ``NoModel`` when nothing names one and the store is empty."""
    config = config or load_config()
    given = [servers] if isinstance(servers, str) else list(servers or ())
    if model and given:
        raise TwoBackends(model, tuple(given))
    urls = configured_servers(given, model, config)
    return urls if urls else resolve_model(model, config)


def open_optimizer(choice: Choice, given: Config = Config(), *, config: Config | None = None,
                   verbose: bool = False) -> Optimizer:
    """BPO on ``choice`` (from ``choose_backend``); each setting is ``given``'s (the user's options, in
    the config file's shape), else the config file's, else the default."""
    config = config or load_config()

    def setting(name: str) -> Any:
        return _first(getattr(given, name), getattr(config, name))

    if isinstance(choice, tuple):  # the key: given, else $BPO_LOCAL_SERVER_KEY, else the config's
        backend = _servers(choice, setting("server_kind"), configured_server_key(given.server_key, config))
    else:
        backend = _engine(choice, setting("gpu_layers"), setting("ctx"), setting("threads"), setting("cpu_buffers"),
                          verbose)
    return Optimizer(backend)


def load(
    model: str | os.PathLike[str] | None = None,
    *,
    gpu_layers: int | None = None,
    ctx: int | None = None,
    threads: int | None = None,
    cpu_buffers: str | None = None,
    verbose: bool = False,
) -> Optimizer:
    """Load a BPO model: a GGUF path, a store name such as ``bpo:q4_k_m``, or None for the default.

    ``cpu_buffers`` ("auto", "all", "none"; None = "auto") picks llama.cpp's extra CPU weight buffer types:
    "auto" leaves out the ones known to crash (AMX), "all" opts back in."""
    path = resolve_model(os.fspath(model) if model is not None else None)
    return Optimizer(_engine(path, gpu_layers, ctx, threads, cpu_buffers, verbose))


def connect(servers: str | Iterable[str], *, kind: str | None = None, api_key: str | None = None,
            timeout: float | None = None) -> Optimizer:
    """BPO on one or more running servers serving BPO's model (llama.cpp's llama-server or vLLM).

    ``servers`` is a URL or several (requests spread over them, retried on another when one fails);
    ``kind`` ("llama-server", "vllm") skips detection; ``api_key`` is sent as a Bearer token.
    """
    return Optimizer(_servers([servers] if isinstance(servers, str) else list(servers), kind, api_key, timeout))


def _engine(path: Path, gpu_layers: int | None, ctx: int | None, threads: int | None, cpu_buffers: str | None,
            verbose: bool) -> Backend:
    from .backends.llamacpp import Engine

    return Engine(path, n_ctx=ctx, n_gpu_layers=gpu_layers, n_threads=threads, cpu_buffers=cpu_buffers or "auto",
                  verbose=verbose)


def _servers(urls: Sequence[str], kind: str | None, api_key: str | None, timeout: float | None = None) -> Backend:
    from .backends.remote import connect as connect_servers

    return connect_servers(urls, kind=kind, api_key=api_key, timeout=timeout)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
