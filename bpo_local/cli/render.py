"""How `optimize` shows results: plain text for pipes, live streaming and progress on a terminal.

Text output (documented in ``bpo-local optimize --help``):

- one candidate: the optimized prompt as is;
- several candidates (aggressive mode, or ``-n``): separated by a line holding only ``---``;
- ``--lines``: one input line -> one output line, candidates separated by a TAB, with ``\\``, newline,
  CR and TAB inside a prompt escaped as ``\\\\``, ``\\n``, ``\\r``, ``\\t``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..batch import BatchItem, answer_record, error_record
from ..journal import dumps
from ..optimizer import format_candidates

if TYPE_CHECKING:
    from ..optimizer import OptimizeResult, OptimizeStream

_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def escape_line(text: str) -> str:
    return text.translate(_ESCAPES)


def stream_to_terminal(stream: OptimizeStream) -> OptimizeResult:
    """Show candidates as they are generated, then leave exactly the final text on the screen.

    Ctrl-C stops generating and leaves the partial text on the screen before propagating.
    """
    from ..presets import postprocess

    preset = stream.preset
    console = Console()
    raw = [""] * preset.n
    try:
        with Live(console=console, transient=True, vertical_overflow="crop", refresh_per_second=12) as live:
            for delta in stream:
                raw[delta.index] += delta.text
                shown = format_candidates([postprocess(text, preset) for text in raw])
                live.update(Text(_tail(shown, console.height - 1)))
    except KeyboardInterrupt:
        stream.cancel()
        print(format_candidates(stream.result.candidates), flush=True)
        raise
    return stream.result


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-max(lines, 1):])


class JsonlSink:
    """Batch records as JSON lines on a text stream, flushed one at a time."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def answer(self, item: BatchItem, result: OptimizeResult) -> None:
        self._write(answer_record(item, result))

    def fail(self, item: BatchItem, message: str) -> None:
        self._write(error_record(item, message))

    def _write(self, record: dict) -> None:
        self.out.write(dumps(record).decode("utf-8"))
        self.out.flush()


class LinesSink:
    """``--lines`` plain output: output line K answers input line K (blank and failed lines stay blank)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last_line = 0

    def answer(self, item: BatchItem, result: OptimizeResult) -> None:
        self._write(item, "\t".join(escape_line(c) for c in result.candidates))

    def fail(self, item: BatchItem, message: str) -> None:
        print(f"error: line {item.line}: {message}", file=sys.stderr, flush=True)
        self._write(item, "")

    def _write(self, item: BatchItem, text: str) -> None:
        self.out.write("\n" * (item.line - self.last_line - 1) + text + "\n")
        self.out.flush()
        self.last_line = item.line


@contextmanager
def batch_progress(console: Console, total: int) -> Iterator[Callable[[], None]]:
    """A done/total bar with a prompts-per-second rate on ``console``; yields ``advance()``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    columns = (
        TextColumn("optimizing"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False) as progress:
        task = progress.add_task("batch", total=total, rate="")

        def advance() -> None:
            done = progress.tasks[0].completed + 1
            rate = done / max(time.monotonic() - start, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.2f} prompts/s")

        yield advance
