"""What a person sees of BPO in a chat app: the rewrite in a collapsible block at the top of the answer
(``--show-rewrite``, ``X-BPO-Show-Rewrite``), taken out of the history again before anything goes upstream;
and the prefix that skips BPO for one message.

The block is HTML's ``<details>``, which Open WebUI, LibreChat and LobeChat render collapsed.
"""

from __future__ import annotations

import re

SUMMARY = "BPO's rewrite of your prompt"
OPEN = f"<details><summary>{SUMMARY}</summary>\n\n"
CLOSE = "\n\n</details>\n\n"
_BLOCK = re.compile(r"\A\s*<details><summary>" + re.escape(SUMMARY) + r"</summary>.*?</details>\s*", re.DOTALL)

SKIP_PREFIX = "!raw"
"""A message that begins with this goes upstream as typed, without it: no chat app we know intercepts ``!``."""


def block(text: str) -> str:
    """The whole block around ``text``: a rewrite known at once (a remembered turn), or why none went."""
    return OPEN + text + CLOSE


def not_used(reason: str | None) -> str:
    """What a block says when no rewrite went upstream."""
    return f"*(not used: {reason or 'no rewrite'}; your prompt went as typed)*"


def strip(text: str) -> str:
    """``text`` without a block at its start (an earlier answer, as the app sends it back as history)."""
    return _BLOCK.sub("", text, count=1) if text.lstrip().startswith("<details>") else text


def skipped(text: str) -> str | None:
    """The message without the skip prefix, where it begins with it; else None."""
    if not text.startswith(SKIP_PREFIX):
        return None
    rest = text[len(SKIP_PREFIX):]
    return rest.lstrip() if not rest or rest[0].isspace() else None
