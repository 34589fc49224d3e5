"""`bpo-local convert` (placeholder until its owner lands it)."""

from __future__ import annotations

import argparse

from ..errors import BpoLocalError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert", help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise BpoLocalError("`convert` is not built yet")
