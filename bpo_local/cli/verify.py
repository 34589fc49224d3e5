"""`bpo-local verify` (placeholder until its owner lands it)."""

from __future__ import annotations

import argparse

from ..errors import BpoLocalError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise BpoLocalError("`verify` is not built yet")
