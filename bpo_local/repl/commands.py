"""The REPL's slash commands: a table of small handlers, each with its help line.

A new command is one function decorated with ``@command``; ``/help`` is generated from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.text import Text

from ..errors import UsageError
from ..presets import parse_parameter
from . import view
from .external import copy_to_clipboard, edit_text

if TYPE_CHECKING:
    from rich.console import Console

    from ..optimizer import Optimizer
    from .session import Session, Settings


class Repl(Protocol):
    """What a command may use of the REPL (``app.Repl`` is the one there is); the table stays free of the app."""

    optimizer: Optimizer
    console: Console
    settings: Settings
    session: Session
    prefill: str
    running: bool

    def optimize(self, prompt: str) -> None: ...
    def compare(self, target: str | None) -> None: ...
    def switch_model(self, name: str) -> None: ...
    def show_banner(self) -> None: ...
    def show_params(self) -> None: ...


Handler = Callable[[Repl, str], None]

STATS_TURNS = 10


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, help: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, usage, help, handler)
        return handler

    return register


ALIASES = {"quit": "exit", "bye": "exit"}
"""Other names users type for a command (``ollama run`` leaves on /bye)."""


def dispatch(repl: Repl, line: str) -> None:
    """Run ``/name args``; an unknown name is a usage error naming ``/help``, and so is a command of
    several lines (the lines after it would otherwise become its argument)."""
    if "\n" in line.strip():
        raise UsageError("a /command is one line; send the prompt after it on its own")
    name, _, arg = line.strip()[1:].partition(" ")
    cmd = COMMANDS.get(ALIASES.get(name.lower(), name.lower()))
    if cmd is None:
        raise UsageError(f"unknown command /{name}; /help lists the commands")
    cmd.run(repl, arg.strip())


# sampling settings


def _setting(name: str, field: str, usage: str, help: str) -> None:
    """Register ``/name VALUE`` for the override ``field`` (range from ``presets.LIMITS``): sets it,
    ``default`` clears it, no value shows it."""

    def handle(repl: Repl, arg: str) -> None:
        if arg:
            try:
                value = None if arg.lower() in ("default", "random") else parse_parameter(field, arg)
            except UsageError as exc:
                raise UsageError(f"/{name}: {exc} (or `default`)") from None
            repl.settings.set(field, value)
        repl.show_params()

    command(name, usage, help)(handle)


@command("help", "", "list the commands")
def _help(repl: Repl, arg: str) -> None:
    repl.console.print(view.help_table(COMMANDS.values()))


@command("mode", "NAME", "the preset: stable (one rewrite), aggressive (numbered candidates), pas, mepo, yours")
def _mode(repl: Repl, arg: str) -> None:
    if arg:
        repl.settings.mode = repl.optimizer.preset(arg).name  # UsageError listing the known ones
    repl.show_params()


_setting("n", "n", "K", "number of candidates (`default`: the mode's)")
_setting("temp", "temperature", "T", "sampling temperature, 0 = greedy")
_setting("top_p", "top_p", "P", "nucleus sampling mass, in (0, 1]")
_setting("top_k", "top_k", "K", "sample from the K likeliest tokens, 0 = off")
_setting("max", "max_tokens", "N", "most tokens to generate (also caps /compare answers)")
_setting("seed", "seed", "N|random", "fixed seed for reproducible turns, or random")


@command("params", "", "show the sampling parameters of the next turn")
def _params(repl: Repl, arg: str) -> None:
    repl.show_params()


# turns


@command("retry", "", "optimize the last prompt again")
def _retry(repl: Repl, arg: str) -> None:
    repl.optimize(repl.session.last.result.prompt)


@command("pick", "N", "choose candidate N of the last turn for /use, /diff, /copy, /compare")
def _pick(repl: Repl, arg: str) -> None:
    turn = repl.session.last
    count = len(turn.result.candidates)
    if not arg.isdigit() or not 1 <= int(arg) <= count:
        raise UsageError(f"pick a candidate between 1 and {count}, e.g. /pick 1")
    turn.picked = int(arg) - 1
    repl.console.print(view.candidates(turn.result.candidates, picked=turn.picked))


@command("diff", "", "word-level diff of the last prompt and its optimized version")
def _diff(repl: Repl, arg: str) -> None:
    turn = repl.session.last
    console = repl.console
    markers = console.no_color or console.color_system is None
    console.print(view.word_diff(turn.result.prompt, turn.chosen, markers=markers))


@command("use", "", "put the optimized (or picked) prompt in the input line, to edit and send")
def _use(repl: Repl, arg: str) -> None:
    repl.prefill = repl.session.last.chosen
    repl.console.print("[dim]the optimized prompt is in the input line; edit it and press Enter[/]")


@command("edit", "", "edit the next prompt in $VISUAL/$EDITOR (the last one, or what /use put there)")
def _edit(repl: Repl, arg: str) -> None:
    current = repl.prefill or (repl.session.turns[-1].result.prompt if repl.session.turns else "")
    repl.prefill = edit_text(current)
    repl.console.print("[dim]the edited prompt is in the input line; press Enter to optimize it[/]")


@command("copy", "", "copy the optimized (or picked) prompt to the clipboard")
def _copy(repl: Repl, arg: str) -> None:
    repl.console.print(Text(copy_to_clipboard(repl.session.last.chosen, repl.console.file), style="dim"))


@command("compare", "[MODEL]", "answer the original and the optimized prompt with a target chat model, side by side")
def _compare(repl: Repl, arg: str) -> None:
    repl.compare(arg or None)


# session


@command("save", "FILE", "save the session as Markdown (.md) or JSON Lines (.jsonl)")
def _save(repl: Repl, arg: str) -> None:
    if not arg:
        raise UsageError("name the file: /save session.md or /save session.jsonl")
    path = Path(arg).expanduser()
    repl.session.save(path)
    repl.console.print(Text(f"saved {len(repl.session.turns)} turn(s) to {path}", style="dim"))


@command("history", "", "list this session's turns")
def _history(repl: Repl, arg: str) -> None:
    repl.console.print(view.history(repl.session.recent()))


@command("stats", "", "time to first token and speed of the last turns")
def _stats(repl: Repl, arg: str) -> None:
    turns = repl.session.recent(STATS_TURNS)
    repl.console.print(view.stats(turns, first_number=len(repl.session.turns) - len(turns) + 1))


@command("model", "[PATH|NAME]", "show the model, or switch to another build")
def _model(repl: Repl, arg: str) -> None:
    if arg:
        repl.switch_model(arg)
    repl.show_banner()


@command("exit", "", "leave (or /quit, /bye, Ctrl-D)")
def _exit(repl: Repl, arg: str) -> None:
    repl.running = False
