"""What the fleet needs from one server of a given kind: its facts, its tokenizer, and generation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ...backend import Capabilities, GenerationResult, Request, TokenEvent
from .http import Server

Emit = Callable[[TokenEvent], None]


@dataclass(frozen=True)
class ServerFacts:
    """What a server says about itself (``doctor --server`` shows these)."""

    kind: str
    url: str
    version: str
    model: str
    n_ctx: int
    slots: int | None
    chat_template: str | None
    eos_token: int


class Endpoint(Protocol):
    """One server of one kind. ``run`` generates every candidate of ``request``; ``emit`` gets each
    token as it streams; ``cancelled`` set means stop now (the result ends "cancelled")."""

    server: Server
    facts: ServerFacts
    capabilities: Capabilities

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_for_piece(self, piece: str) -> int | None: ...

    def run(self, request: Request, seed: int, emit: Emit, cancelled: threading.Event) -> GenerationResult: ...
