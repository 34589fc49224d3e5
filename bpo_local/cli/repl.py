"""`bpo-local repl` (placeholder until its owner lands it)."""

from __future__ import annotations

import argparse

from ..errors import BpoLocalError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("repl", help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise BpoLocalError("`repl` is not built yet")
