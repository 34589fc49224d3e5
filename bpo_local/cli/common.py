"""Pieces every subcommand shares: model options, loading, and a status console on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import Config
    from ..optimizer import Optimizer


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model --gpu-layers --ctx --threads``, with the config file and environment as fallbacks."""
    from ..backends.llamacpp.buffers import POLICIES

    group = parser.add_argument_group("model")
    group.add_argument("-m", "--model", help="GGUF path or store name such as bpo:q4_k_m (default: best build)")
    group.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload (default: all; 0 = CPU only)")
    group.add_argument("--ctx", type=int, metavar="TOKENS", help="context size (default: the model's, capped at 4096)")
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    group.add_argument("--cpu-buffers", choices=POLICIES,
                       help="llama.cpp's extra CPU weight layouts: auto leaves out AMX, which crashes on quantized "
                            "models; all opts back in once your llama.cpp is fixed; none uses plain buffers "
                            "(default: auto, or cpu_buffers in config.toml)")


def status_console() -> Console:
    """Progress and status: stderr, and silent unless stderr is a terminal. Honours NO_COLOR."""
    from rich.console import Console

    return Console(stderr=True, quiet=not sys.stderr.isatty())


def load_optimizer(args: argparse.Namespace) -> Optimizer:
    """Resolve and load the model the options name, with a spinner on a terminal."""
    from ..config import load_config
    from ..optimizer import load

    config = load_config()
    path = _resolve_or_offer_build(args.model, config)
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
