"""Pieces every subcommand shares: model options, loading, and a status console on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import Config
    from ..optimizer import Optimizer


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model --gpu-layers --ctx --threads --cpu-buffers`` for a local model, ``--server --server-kind
    --server-key`` for running servers; the config file and environment are fallbacks."""
    from ..backends.llamacpp.buffers import POLICIES

    group = parser.add_argument_group("model")
    group.add_argument("-m", "--model", help="GGUF path or store name such as bpo:q4_k_m (default: best build)")
    group.add_argument("--server", action="append", metavar="URL",
                       help="use a running llama-server or vLLM serving BPO instead of a local model; repeat or "
                            "comma-separate for several (requests spread, retried elsewhere; env BPO_LOCAL_SERVER)")
    group.add_argument("--server-kind", choices=("llama-server", "vllm"), help="skip detecting the servers' kind")
    group.add_argument("--server-key", metavar="KEY", help="Bearer token for the servers (env BPO_LOCAL_SERVER_KEY)")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload (default: all; 0 = CPU only)")
    group.add_argument("--ctx", type=int, metavar="TOKENS", help="context size (default: the model's, capped at 4096)")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    group.add_argument("--cpu-buffers", choices=POLICIES,
                       help="llama.cpp's extra CPU weight layouts: auto leaves out AMX, which crashes on quantized "
                            "models; all opts back in once your llama.cpp is fixed; none uses plain buffers "
                            "(default: auto, or cpu_buffers in config.toml)")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--parallel``, ``--queue``, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def seconds(text: str) -> float:
    """An argparse type: a duration in seconds, > 0 (``--grace``, ``--upstream-timeout``)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def status_console() -> Console:
    """Progress and status: stderr, and silent unless stderr is a terminal. Honours NO_COLOR."""
    from rich.console import Console

    return Console(stderr=True, quiet=not sys.stderr.isatty())


def choose_backend(args: argparse.Namespace) -> tuple[str, ...] | Path:
    """What the options name, resolved once: the servers' URLs, or the local model's path."""
    from ..config import configured_servers, load_config

    config = load_config()
    if args.model and args.server:
        raise UsageError("--model and --server name two different backends; give one")
    servers = configured_servers(args.server, args.model, config)
    return servers if servers else _resolve_or_offer_build(args.model, config)


def load_optimizer(args: argparse.Namespace, choice: tuple[str, ...] | Path | None = None) -> Optimizer:
    """Load the model the options name (or ``choice`` from ``choose_backend``), with a spinner on a
    terminal: a local GGUF, or the servers given by --server."""
    from ..config import configured_server_key, load_config
    from ..optimizer import connect, load

    config = load_config()
    path = choice if choice is not None else choose_backend(args)
    if isinstance(path, tuple):
        with status_console().status(f"connecting to {', '.join(path)}"):
            return connect(path, kind=args.server_kind or config.server_kind,
                           api_key=configured_server_key(args.server_key, config))
    with status_console().status(f"loading {path.name}"):
        return load(
            path,
            gpu_layers=_first(args.gpu_layers, config.gpu_layers),
            ctx=_first(args.ctx, config.ctx),
            threads=_first(args.threads, config.threads),
            cpu_buffers=args.cpu_buffers or config.cpu_buffers,
            verbose=args.debug,
        )


def _resolve_or_offer_build(model: str | None, config: Config) -> Path:
    """``resolve_model``; when nothing is configured and the store is empty, a user at a terminal is
    offered to build the default model (elsewhere the one-line error says how)."""
    from ..config import configured_model
    from ..errors import ModelNotFound
    from ..models.resolve import resolve_model

    try:
        return resolve_model(model, config)
    except ModelNotFound:
        if configured_model(model, config) is not None:
            raise
        from ..models.build import offer_default_build

        built = offer_default_build(status_console())
        if built is None:
            raise
        return built


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)
