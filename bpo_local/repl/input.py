"""Reading prompts: prompt_toolkit with multi-line editing, paste, ``\"\"\"`` blocks and a history file.

Enter sends; Esc+Enter or Ctrl-J inserts a newline; a pasted block stays one prompt (bracketed paste);
a line opening with ``\"\"\"`` goes on until a line closing with ``\"\"\"``; Ctrl-R searches the history,
Ctrl-X Ctrl-E opens the line in $EDITOR.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.filters import is_searching
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from ..config import private_file

BLOCK = '"""'


def block_open(text: str) -> bool:
    """True while ``text`` starts a ``\"\"\"`` block that is not closed yet."""
    stripped = text.strip()
    return stripped.startswith(BLOCK) and (len(stripped) < 2 * len(BLOCK) or not stripped.endswith(BLOCK))


def unwrap(text: str) -> str:
    """The prompt inside a ``\"\"\"`` block, or ``text`` itself."""
    stripped = text.strip()
    if stripped.startswith(BLOCK) and stripped.endswith(BLOCK) and len(stripped) >= 2 * len(BLOCK):
        return stripped[len(BLOCK):-len(BLOCK)].strip("\n")
    return text


@contextmanager
def typeahead_waits() -> Iterator[None]:
    """While a rewrite streams, keys typed wait for the next prompts, unseen: no echo to push the live
    panels around, and each Enter kept as Enter (no CR->NL translation, which the prompt would take for a
    newline inside one input), so lines typed meanwhile are read afterwards as separate inputs.
    Ctrl-C still interrupts."""
    try:
        import termios
    except ImportError:  # pragma: no cover - Windows: the console keeps its own buffer
        yield
        return
    fd = sys.stdin.fileno()
    if not sys.stdin.isatty():
        yield
        return
    saved = termios.tcgetattr(fd)
    held = termios.tcgetattr(fd)
    held[0] &= ~termios.ICRNL
    held[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, held)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)  # not TCSAFLUSH: the typed keys are kept


def _bindings() -> KeyBindings:
    keys = KeyBindings()
    editing = ~is_searching  # while Ctrl-R searches, Enter accepts the match (prompt_toolkit's own binding)

    @keys.add("enter", filter=editing)
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if block_open(buffer.text):
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    @keys.add("escape", "enter", filter=editing)
    @keys.add("c-j", filter=editing)
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return keys


def prompt_session(history_file: Path) -> PromptSession[str]:
    private_file(history_file)
    return PromptSession(
        history=FileHistory(str(history_file)),
        key_bindings=_bindings(),
        multiline=True,
        prompt_continuation=lambda width, line_number, wrap_count: "." * (width - 1) + " ",
        enable_open_in_editor=True,
    )
