"""`bpo-local log`: list, search and export the run log.

Output: a table on a terminal; one tab-separated line per entry in a pipe (id, created, mode, model,
prompt, optimized prompt, escaped as ``optimize --lines`` escapes them: a newline shows as ``\\n``);
``--json`` an array, newest first; ``--jsonl`` one object per line, oldest first, every entry unless
``-n`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError

DEFAULT_LIMIT = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "log", help="list, search and export past optimizations",
        description="List, search and export the run log of past optimizations.",
    )
    parser.add_argument("-n", "--limit", type=int, metavar="N",
                        help=f"newest N entries (default {DEFAULT_LIMIT}; all for --jsonl; 0 = all)")
    parser.add_argument("-q", "--search", metavar="TEXT", help="only entries whose prompt or output holds these words")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="a JSON array, newest first")
    formats.add_argument("--jsonl", action="store_true", help="export: one JSON object per line, oldest first")
    formats.add_argument("--path", action="store_true", help="print where the log is kept")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runlog import RunLog, default_path

    if args.path:
        print(default_path())
        return 0
    limit = args.limit
    if limit is not None and limit < 0:
        raise UsageError(f"-n must be 0 (all) or more, got {limit}")
    if limit is None:
        limit = 0 if args.jsonl else DEFAULT_LIMIT
    with RunLog.open() as log:
        entries = log.query(args.search, limit=limit or None)
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=2))
    elif args.jsonl:
        for entry in reversed(entries):
            print(json.dumps(entry, ensure_ascii=False))
    elif sys.stdout.isatty():
        _print_table(entries)
    else:
        from .render import escape_line

        for e in entries:
            print("\t".join(escape_line(str(v)) for v in (e["id"], e["created"], e["mode"], e["model"],
                                                            e["prompt"], _output(e))))
    return 0


def _print_table(entries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not entries:
        console.print("[dim]no entries[/]")
        return
    table = Table(show_lines=True)
    for name, style in (("#", "dim"), ("when", "dim"), ("mode", None), ("prompt", None), ("optimized", "green")):
        table.add_column(name, style=style, overflow="fold")
    for e in entries:
        when = e["created"][:19].replace("T", " ")
        cells = (str(e["id"]), f"{when}\n{e['model']}", e["mode"], _clip(e["prompt"]), _clip(_output(e)))
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)


def _output(entry: dict[str, Any]) -> str:
    text = entry["output"]
    if len(entry["candidates"]) > 1:
        text += f"  (+{len(entry['candidates']) - 1} more)"
    return text + ("  [interrupted]" if entry["interrupted"] else "")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
