"""Programs outside the REPL: the user's editor and the system clipboard."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TextIO

from ..errors import UsageError

CLIPBOARD_TOOLS: tuple[tuple[str, ...], ...] = (
    ("pbcopy",),
    ("wl-copy",),
    ("xclip", "-selection", "clipboard"),
    ("xsel", "--clipboard", "--input"),
    ("clip.exe",),
)


def edit_text(text: str) -> str:
    """Open ``text`` in ``$VISUAL``/``$EDITOR`` (else vi) and return what the user saved."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or shutil.which("vi")
    if not editor:
        raise UsageError("no editor: set $VISUAL or $EDITOR, e.g. `export EDITOR=nano`")
    fd, name = tempfile.mkstemp(prefix="bpo-prompt-", suffix=".md")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            code = subprocess.call([*shlex.split(editor), str(path)])
        except OSError as exc:
            raise UsageError(f"cannot start editor {editor!r}: {exc.strerror}; check $VISUAL/$EDITOR") from exc
        if code != 0:
            raise UsageError(f"editor {editor!r} exited with status {code}; prompt left unchanged")
        return path.read_text(encoding="utf-8").rstrip("\n")
    finally:
        path.unlink(missing_ok=True)


def copy_to_clipboard(text: str, terminal: TextIO) -> str:
    """Copy with the first clipboard tool that works; else send OSC 52 to the terminal. Says how."""
    for argv in CLIPBOARD_TOOLS:
        exe = shutil.which(argv[0])
        if exe is None:
            continue
        try:
            # The tool may keep running to serve the selection: no pipes left open to wait on.
            done = subprocess.run([exe, *argv[1:]], input=text.encode("utf-8"), timeout=5,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return f"copied with {argv[0]}"
    terminal.write(f"\x1b]52;c;{base64.b64encode(text.encode('utf-8')).decode('ascii')}\a")
    terminal.flush()
    names = ", ".join(argv[0] for argv in CLIPBOARD_TOOLS)
    return f"no clipboard tool worked ({names}); sent it to the terminal as OSC 52, which many terminals accept"
