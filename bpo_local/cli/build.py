"""The CLI's part of building a model: the progress bars, and the offer to build the default model
when a command finds the store empty (the library builds; the face asks and draws)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def offer_default_build(console: Console) -> Path | None:
    """On a terminal, offer to build the default model when the store is empty; the new default build's
    path, or None (declined, or not a terminal: the caller shows how to build it)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None
    from rich.prompt import Confirm

    from ..config import models_dir
    from ..models.build import DEFAULT_DOWNLOAD, DEFAULT_SOURCE, ConvertPlan, convert
    from ..models.quantize import DEFAULT_QUANTS
    from ..models.store import ModelStore

    store = ModelStore(models_dir())
    console.print(f"No BPO model is built yet. Building one downloads {DEFAULT_SOURCE} ({DEFAULT_DOWNLOAD}), "
                  f"converts and quantizes it to {', '.join(DEFAULT_QUANTS)} in {store.root}.",
                  highlight=False)
    if not Confirm.ask("Build it now?", console=console, default=False):
        console.print(f"Later: `bpo-local convert {DEFAULT_SOURCE}`", highlight=False)
        return None
    with progress_bars(console) as progress:
        builds = convert(ConvertPlan(), store, progress=progress)
    for build in builds:
        console.print(f"built {build.name}: {build.path}", highlight=False)
    return store.best()


def progress_bars(console: Console) -> Progress:
    """The bars a convert run shows (download, per tensor, per eval pair) on ``console``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
