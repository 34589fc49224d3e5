"""`bpo-local models`: list the builds in the local store, print one's path, or remove one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from ..models.store import Build, ModelStore


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, locate or remove local builds",
                                   description="List the builds in the local model store (default first).")
    parser.add_argument("--json", action="store_true", help="print the builds as a JSON list")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    path = actions.add_parser("path", help="print the GGUF path of a build")
    path.add_argument("name", metavar="NAME", help="store name such as bpo:q4_k_m")
    rm = actions.add_parser("rm", help="delete a build")
    rm.add_argument("name", metavar="NAME", help="store name such as bpo:q4_k_m")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import models_dir
    from ..models.store import ModelStore

    store = ModelStore(models_dir())
    if args.action == "path":
        print(store.resolve(args.name))
    elif args.action == "rm":
        build = store.remove(args.name)
        print(f"removed {build.name}", file=sys.stderr)
    elif args.json:
        default = store.best()
        print(json.dumps([_as_json(b, default) for b in store.builds()], indent=2))
    else:
        _list(store)
    return 0


def _list(store: ModelStore) -> None:
    builds = store.builds()
    if not builds:
        print(f"no builds in {store.root}; make one with `bpo-local convert`", file=sys.stderr)
        return
    print_builds(builds, default=store.best())


PIPE_COLUMNS = ("build", "quant", "size", "source", "KL", "path")
"""The columns ``models`` prints into a pipe, as its header line says."""


def print_builds(builds: Sequence[Build], *, default: object = None) -> None:
    """A table on a terminal; in a pipe a header line (``PIPE_COLUMNS``) and one tab-separated line per
    build, which cut and awk read without truncation."""
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(builds_table(builds, default=default))
        return
    print("\t".join(PIPE_COLUMNS))
    for build in builds:
        print("\t".join([build.name, build.quant, _size(build.size_bytes), build.source_repo or "-",
                         _kl(build), str(build.path)]))


def builds_table(builds: Sequence[Build], *, default: object = None) -> Table:
    """Builds as a rich table: name (* = default), quant, size, bits per weight, source, mean KL
    divergence from the full-precision reference, path."""
    from rich.table import Table

    caption = "* the default build (used without --model)" if any(b.path == default for b in builds) else None
    table = Table(box=None, header_style="bold", caption=caption, caption_justify="left")
    for column in ("build", "quant", "size", "bpw", "source", "KL", "path"):
        table.add_column(column, justify="right" if column in ("size", "bpw", "KL") else "left")
    for build in builds:
        name = f"{build.name} *" if build.path == default else build.name
        if not build.intact:
            name += " (damaged)"
        table.add_row(name, build.quant, _size(build.size_bytes), f"{build.bits_per_weight:.2f}",
                      build.source_repo or "-", _kl(build), str(build.path))
    return table


def _as_json(build: Build, default: object) -> dict[str, object]:
    return {**build.to_manifest(), "path": str(build.path), "default": build.path == default,
            "intact": build.intact, "bits_per_weight": build.bits_per_weight}


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _kl(build: Build) -> str:
    v = build.verification
    return f"{v['kl_mean']:.4f}" if v else "-"
