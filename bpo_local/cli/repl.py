"""`bpo-local repl`: the interactive workbench (see bpo_local.repl)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..presets import MODES
from .common import add_model_options, load_optimizer, status_console

if TYPE_CHECKING:
    from ..optimizer import Optimizer
    from ..targets import ChatTarget

HISTORY_FILE = "repl_history"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "repl", help="interactive workbench: optimize, pick, diff, compare answers, save",
        description="Optimize prompts interactively; /help inside lists the commands.",
    )
    add_model_options(parser)
    parser.add_argument("--mode", choices=MODES, help="starting BPO mode (default: the model's own preset, else stable)")
    parser.add_argument("--preset", dest="mode", metavar="NAME",
                        help="starting preset: stable, aggressive, pas, mepo, or a TOML file's name in the config "
                             "folder's presets/")
    parser.add_argument("--target", metavar="MODEL",
                        help="chat model that /compare answers both prompts with: a GGUF path, a store name, "
                             "or an OpenAI-compatible server's URL ($OPENAI_API_KEY is its key)")
    parser.add_argument("--no-log", action="store_true", help="do not record turns in the run log")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("repl needs a terminal; use `bpo-local optimize` for pipes")
    from rich.console import Console

    from ..config import state_dir
    from ..models.resolve import resolve_model
    from ..repl import Repl
    from ..runlog import RunLog
    from ..targets import is_url

    target = args.target
    if target and not is_url(target):
        target = str(resolve_model(target))  # a typo fails now, not at /compare
    log = None if args.no_log else RunLog.open()
    try:
        repl = Repl(
            load_optimizer(args),
            console=Console(),
            history_file=state_dir() / HISTORY_FILE,
            log=log,
            load_model=lambda name: _load_model(args, name),
            load_target=lambda name: _load_target(args, name),
            target=target,
        )
        repl.settings.mode = repl.optimizer.preset(args.mode).name  # an unknown name fails now
        try:
            repl.run()
        finally:
            repl.close()
    finally:
        if log is not None:
            log.close()
    return 0


def _load_model(args: argparse.Namespace, name: str) -> Optimizer:
    return load_optimizer(argparse.Namespace(**{**vars(args), "model": name, "server": None}))


def _load_target(args: argparse.Namespace, name: str) -> ChatTarget:
    from ..config import load_config
    from ..targets import open_target

    cpu_buffers = args.cpu_buffers or load_config().cpu_buffers
    with status_console().status(f"loading target {name}"):
        return open_target(name, key=os.environ.get("OPENAI_API_KEY"), gpu_layers=args.gpu_layers, ctx=args.ctx,
                           threads=args.threads, cpu_buffers=cpu_buffers, verbose=args.debug)
