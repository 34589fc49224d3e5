"""Pieces every subcommand shares: model options, loading, and a status console on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ..config import Config
    from ..open import Choice
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
    group.add_argument("--threads", type=int, metavar="N",
                       help="pin the CPU threads (default: measured while decoding, 1 to the physical cores)")
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


def choose_or_build(args: argparse.Namespace) -> Choice:
    """What the options name, resolved once (``open.choose_backend``): the servers' URLs, or the local model's
    path; when nothing names a model and the store is empty, a user at a terminal is offered a build."""
    from ..errors import NoModel
    from ..open import choose_backend

    try:
        return choose_backend(args.model, args.server)
    except NoModel:  # nothing names a model (a named one that is missing is another error)
        from .build import offer_default_build

        built = offer_default_build(status_console())
        if built is None:
            raise
        return built


def load_optimizer(args: argparse.Namespace, choice: Choice | None = None) -> Optimizer:
    """Open BPO on what the options name (or ``choice`` from ``choose_or_build``), with a spinner on a
    terminal: a local GGUF, or the servers given by --server."""
    from ..open import open_optimizer

    settings = given(args)
    choice = choice if choice is not None else choose_or_build(args)
    what = f"connecting to {', '.join(choice)}" if isinstance(choice, tuple) else f"loading {choice.name}"
    with status_console().status(what):
        optimizer = open_optimizer(choice, settings, verbose=args.debug)
    info = optimizer.info
    if info.n_ctx_train and info.n_ctx > info.n_ctx_train:
        print(f"warning: a context of {info.n_ctx} tokens is beyond the {info.n_ctx_train} {info.name} was "
              "trained on; rewrites of longer prompts may degrade (lower --ctx)", file=sys.stderr)
    return optimizer


def given(args: argparse.Namespace) -> Config:
    """The settings ``add_model_options`` parsed, in the config file's shape (None: not given)."""
    from ..config import Config

    return Config(server_kind=args.server_kind, server_key=args.server_key, gpu_layers=args.gpu_layers,
                  ctx=args.ctx, threads=args.threads, cpu_buffers=args.cpu_buffers)
