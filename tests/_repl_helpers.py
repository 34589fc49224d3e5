"""Helpers for the REPL, run log and `log` tests: real OptimizeResults and a REPL in a pseudo-terminal."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import MappingProxyType

from bpo_local.engine.types import Timings
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
