"""How the REPL shows things: pure functions from data to rich renderables."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from pathlib import Path

    from ..backend import ModelInfo
    from .session import Turn

WORDS = re.compile(r"\s+|[^\s]+")


def banner(info: ModelInfo, log_path: Path | None) -> RenderableType:
    """Model build, quant, backend, offloaded layers and context size, in one panel."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("model", Text(f"{info.name}  ({info.title})" if info.title else info.name))
    table.add_row("quant", Text(f"{info.file_type}, {info.size_bytes / 2**30:.2f} GiB"))
    offloaded = min(info.gpu_layers, info.n_layer)  # llama.cpp counts the output layer as one more
    table.add_row("backend", Text(f"{info.backend}, {offloaded}/{info.n_layer} layers offloaded"))
    table.add_row("context", Text(f"{info.n_ctx} tokens (trained on {info.n_ctx_train})"))
    table.add_row("log", Text(str(log_path) if log_path else "off (--no-log)"))
    hint = Text.from_markup('[dim]/help for commands · Esc+Enter or Ctrl-J for a newline · """ for a block · '
                            "Ctrl-C stops a generation · Ctrl-D leaves[/]")
    return Panel(Group(table, hint), title="bpo-local repl", title_align="left", border_style="blue")


def candidates(texts: Sequence[Text | str], *, picked: int | None = None,
               cancelled: Sequence[bool] = ()) -> RenderableType:
    """The optimized prompt, or numbered candidates when there are several; ``cancelled[i]`` marks
    candidate i as cut short by Ctrl-C."""

    def title(index: int, name: str) -> str:
        status = " [yellow]interrupted[/]" if index < len(cancelled) and cancelled[index] else ""
        return f"{name}{' (picked)' if index == picked else ''}{status}"

    if len(texts) == 1:
        return Panel(_body(texts[0]), title=title(0, "optimized"), title_align="left", border_style="green")
    return Group(*(Panel(_body(text), title=title(i, str(i + 1)), title_align="left",
                         border_style="green" if i == picked else "dim") for i, text in enumerate(texts)))


def _body(text: Text | str) -> Text:
    if isinstance(text, Text):
        return text
    return Text(text) if text else Text("(empty)", style="dim")


def word_diff(old: str, new: str, *, markers: bool) -> Text:
    """Word-level diff of ``old`` -> ``new``: removed words red and struck, added words green.

    With ``markers`` (no colour) removals read ``[-old-]`` and additions ``{+new+}``, as git's word diff.
    """
    a, b = WORDS.findall(old), WORDS.findall(new)
    out = Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append("".join(a[i1:i2]))
            continue
        if i2 > i1:
            removed = "".join(a[i1:i2])
            out.append(f"[-{removed}-]" if markers else removed, style="red strike")
        if j2 > j1:
            added = "".join(b[j1:j2])
            out.append(f"{{+{added}+}}" if markers else added, style="green")
    return out


def params(values: dict[str, Any], overridden: Iterable[str]) -> RenderableType:
    table = Table(show_header=False, box=None, padding=(0, 2))
    overridden = set(overridden)
    for name, value in values.items():
        note = "set" if name in overridden else "preset"
        table.add_row(name, Text(str(value)), Text(note, style="dim"))
    return table


def stats(turns: Sequence[Turn], first_number: int = 1) -> RenderableType:
    """Timing of each turn: the time to first token drops once the template prefix is cached."""
    table = Table(title="last turns")
    for name in ("turn", "prompt tok", "cached", "first token", "tok/s", "total"):
        table.add_column(name, justify="right")
    for number, turn in enumerate(turns, first_number):
        t = turn.result.timings
        table.add_row(str(number), str(t.prompt_tokens), str(t.cached_prompt_tokens),
                      f"{t.first_token_seconds:.3f} s", f"{t.tokens_per_second:.1f}", f"{t.total_seconds:.2f} s")
    return table


def history(turns: Sequence[Turn]) -> RenderableType:
    table = Table(show_lines=True)
    table.add_column("#", justify="right", style="dim")
    table.add_column("mode")
    table.add_column("prompt", overflow="fold")
    table.add_column("optimized", overflow="fold", style="green")
    for number, turn in enumerate(turns, 1):
        suffix = " [interrupted]" if turn.result.cancelled else ""
        table.add_row(str(number), turn.result.mode, Text(_clip(turn.result.prompt)), Text(_clip(turn.chosen) + suffix))
    return table


def comparison(target: str, prompts: Sequence[str], answers: Sequence[Text | str]) -> RenderableType:
    """The target model's answers to the original and the optimized prompt, side by side."""
    table = Table(title=f"answers of {target}", expand=True, show_lines=True)
    table.add_column("original prompt", ratio=1, overflow="fold")
    table.add_column("optimized prompt", ratio=1, overflow="fold", header_style="bold green")
    table.add_row(*(Text(_clip(p), style="dim") for p in prompts))
    table.add_row(*(_body(a) for a in answers))
    return table


class HelpLine(Protocol):
    """What ``/help`` shows of a command (``commands.Command`` has it; the view needs no more)."""

    @property
    def name(self) -> str: ...
    @property
    def usage(self) -> str: ...
    @property
    def help(self) -> str: ...


def help_table(commands: Iterable[HelpLine]) -> RenderableType:
    table = Table(show_header=False, box=None, padding=(0, 2))
    for cmd in commands:
        table.add_row(Text(f"/{cmd.name} {cmd.usage}".rstrip(), style="bold"), Text(cmd.help))
    return table


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
