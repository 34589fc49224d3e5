"""Helpers for the REPL, run log and `log` tests: real OptimizeResults and a REPL in a pseudo-terminal."""

from __future__ import annotations

import re
from types import MappingProxyType

from _cli_helpers import spawn_cli

from bpo_local.backend import Timings
from bpo_local.optimizer import OptimizeResult

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_=>])")


def make_result(prompt: str, *candidates: str, mode: str = "stable", cancelled: bool = False,
                first_token_seconds: float = 0.25) -> OptimizeResult:
    """An OptimizeResult as the optimizer builds it, for tests of what consumes one."""
    reasons = ("cancelled",) + ("stop",) * (len(candidates) - 1) if cancelled else ("stop",) * len(candidates)
    return OptimizeResult(
        prompt=prompt,
        mode=mode,
        candidates=candidates,
        finish_reasons=reasons,
        params=MappingProxyType({"n": len(candidates), "temperature": 0.6, "top_p": 0.9, "top_k": 50,
                                 "max_tokens": 64, "seed": 7}),
        model="bpo-q4_k_m.gguf",
        timings=Timings(prompt_tokens=40, cached_prompt_tokens=0, prompt_seconds=0.2,
                        first_token_seconds=first_token_seconds, generated_tokens=10, decode_seconds=0.5,
                        total_seconds=0.7),
        seed=7,
    )


def plain(text: str) -> str:
    """Terminal output without escape sequences and carriage returns."""
    return ANSI.sub("", text).replace("\r", "")


PROMPT_START = "\x1b[?2004h"
"""prompt_toolkit turns bracketed paste on once each time it starts reading a line."""


class ReplProcess:
    """`bpo-local repl ARGS` in a pseudo-terminal, driven like a user: type a line, read the screen."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        import pexpect

        self.child = spawn_cli("repl", *args, env={"PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", **(env or {})},
                               dimensions=(60, 140), timeout=timeout)
        self.transcript = ""
        self.raw = ""

    def wait_prompt(self) -> str:
        """Everything shown until the next input prompt, without escape codes."""
        self.child.expect_exact(PROMPT_START)
        return self._take(self.child.before)

    def run(self, line: str) -> str:
        """Type ``line``, press Enter, and return what the REPL printed before asking again."""
        self.child.send(line + "\r")
        return self.wait_prompt()

    def send(self, keys: str) -> None:
        """Type ``keys`` as they are (escape sequences included), without waiting."""
        self.child.send(keys)

    def expect(self, pattern: str) -> str:
        self.child.expect(pattern)
        return self._take(self.child.before + self.child.after)

    def exit(self) -> int:
        """Ctrl-D; the exit status."""
        self.child.sendcontrol("d")
        return self.wait_exit()

    def wait_exit(self) -> int:
        import pexpect

        self.child.expect(pexpect.EOF)
        self._take(self.child.before)
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else -self.child.signalstatus

    def _take(self, raw: str) -> str:
        self.raw += raw
        text = plain(raw)
        self.transcript += text
        return text

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
