"""Entry point: parse the command line, run one subcommand, map failures to one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import crash
from ..version import __version__
from ..errors import BpoLocalError
from ..suggest import did_you_mean

COMMANDS = ("optimize", "repl", "serve", "eval", "convert", "models", "verify", "log", "doctor")
"""Subcommand modules in ``bpo_local.cli``; each defines ``register(subparsers)``."""

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
CRASH_ADVICE = ("if a model was loading, its file may be damaged: re-download or rebuild it; "
                "otherwise please report it with the output of --debug")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one ``error:`` line (the usage block is in ``--help``) and
    suggests the closest choice for a mistyped subcommand or mode."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(choice) for choice in action.choices]
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(str(value), names)} (choose from {', '.join(names)})")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bpo-local",
        description="Run BPO (Black-Box Prompt Optimization) offline on llama.cpp.",
    )
    parser.add_argument("--version", action="version", version=f"bpo-local {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and llama.cpp logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.debug:
        import faulthandler

        faulthandler.enable()  # a native crash shows llama.cpp's backtrace and Python's stack
    else:
        crash.quiet_native_aborts()
        crash.supervise(CRASH_ADVICE)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code or EXIT_OK
    except BpoLocalError as exc:
        if args.debug:
            traceback.print_exc()
        from .advice import describe

        print(f"error: {describe(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def run() -> None:
    """Console-script entry."""
    sys.exit(main())
