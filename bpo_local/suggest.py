"""The closest known name to a mistyped one, as git and cargo suggest it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """``"; did you mean 'NAME'?"`` for the known name closest to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
