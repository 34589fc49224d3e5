"""Reading prompts: prompt_toolkit with multi-line editing, paste, ``\"\"\"`` blocks and a history file.

Enter sends; Esc+Enter or Ctrl-J inserts a newline; a pasted block stays one prompt (bracketed paste);
a line opening with ``\"\"\"`` goes on until a line closing with ``\"\"\"``; Ctrl-R searches the history,
Ctrl-X Ctrl-E opens the line in $EDITOR.
"""

from __future__ import annotations

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
