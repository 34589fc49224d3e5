"""What the REPL adds to a library error: the command to type (a REPL user cannot pass a flag), in one table.

Rows are tried in order, so a subclass comes before its base; an error without a row shows its facts alone.
"""

from __future__ import annotations

from ..errors import (
    Advice,
    BpoLocalError,
    BuildPresetsUnreadable,
    ContextFull,
    ModelIsFolder,
    PromptTooLong,
    TargetUnreachable,
    explain,
)

ADVICE: Advice = (
    (BuildPresetsUnreadable, lambda e: f"{e} or pick a built-in preset with /mode"),
    (PromptTooLong, lambda e: f"{e}; shorten the prompt (or start the REPL with a larger context)"),
    (ContextFull, lambda e: f"{e}; lower /max or /n"),
    (ModelIsFolder, lambda e: f"{e}; convert it with `bpo-local convert {e.path}`" if e.checkpoint
                              else f"{e}; /model the .gguf file inside"),
    (TargetUnreachable, lambda e: f"{e}; /compare MODEL opens another target"),
)


def describe(err: BpoLocalError) -> str:
    """The line the REPL shows after ``error:`` for ``err``."""
    return explain(ADVICE, err)
