"""`bpo-local verify`: KL divergence of a build against its full-precision reference on BPO's task."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelNotFound

if TYPE_CHECKING:
    from rich.table import Table

    from ..models.store import Build, ModelStore

REFERENCE_QUANTS = ("f16", "bf16", "f32")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="measure a build's drift from F16 (KL divergence on BPO pairs)",
        description="Teacher-force BPO pairs through a build and its full-precision reference and compare "
                    "them on the optimized-prompt tokens: KL divergence (mean, p99), same top token, "
                    "perplexity ratio. Store builds get the result in their manifest.")
    parser.add_argument("build", metavar="BUILD", help="store name such as bpo:q4_k_m, or a .gguf path")
    parser.add_argument("--reference", metavar="REF",
                        help="F16 build or .gguf to compare with (default: the store's f16/bf16/f32 build "
                             "of the same model)")
    parser.add_argument("--data", type=Path, metavar="FILE",
                        help="JSON list or JSONL with prompt/optimized_prompt (default: 32 shipped BPO pairs)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="pin the CPU threads (default: measured while decoding, 1 to the physical cores)")
    parser.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload (default: all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import models_dir
    from ..models.build import Bars
    from ..models.resolve import resolve_model
    from ..models.store import ModelStore
    from ..models.verify import Reference, compare, load_pairs
    from .build import progress_bars
    from .common import status_console

    store = ModelStore(models_dir())
    pairs = load_pairs(args.data)
    path = resolve_model(args.build)
    build = _build_at(store, path)
    ref_name = args.reference or _default_reference(store, build, args.build)
    ref_path = resolve_model(ref_name)
    with store.workspace() as work, progress_bars(status_console()) as progress:
        bars = Bars(progress)
        reference = Reference.compute(ref_path, pairs, work, name=ref_name, threads=args.threads,
                                      gpu_layers=args.gpu_layers, on_progress=bars.steps("reference"))
        result = compare(path, reference, threads=args.threads, gpu_layers=args.gpu_layers,
                         on_progress=bars.steps("verify"))
    if build is not None:
        store.set_verification(build, result.to_dict())
    label = build.name if build else path.name
    if args.json:
        print(json.dumps({"build": label, **result.to_dict()}, indent=2))
    else:
        print_results([(label, result.to_dict())])
    return 0


def print_results(rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """The results table on stdout, never truncated (a pipe gets the table at its natural width)."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 1000).print(results_table(rows))


def results_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """Verification results, one row per build (``VerifyResult.to_dict()`` form)."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", title="drift from the reference on BPO pairs")
    table.add_column("build")
    table.add_column("reference")
    for column in ("tokens", "KL mean", "KL p99", "same top", "ppl ratio"):
        table.add_column(column, justify="right")
    for name, r in rows:
        table.add_row(name, r["reference"], str(r["tokens"]), f"{r['kl_mean']:.5f}", f"{r['kl_p99']:.5f}",
                      f"{r['same_top']:.1%}", f"{r['ppl_ratio']:.4f}")
    return table


def _build_at(store: ModelStore, path: Path) -> Build | None:
    return next((b for b in store.builds() if b.path == path), None)


def _default_reference(store: ModelStore, build: Build | None, name: str) -> str:
    if build is not None:
        for quant in REFERENCE_QUANTS:
            candidate = f"{build.model}:{quant}"
            if any(b.name == candidate for b in store.builds()):
                return candidate
    source = build.source_repo if build is not None and build.source_repo else "SOURCE"
    raise ModelNotFound(f"no full-precision reference for {name} (convert keeps none unless asked); build it with "
                        f"`bpo-local convert {shlex.quote(source)} --quant f16`, or pass --reference F16.gguf")
