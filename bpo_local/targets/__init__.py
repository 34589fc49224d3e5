"""A chat model that answers: a local GGUF with its own chat template, or an OpenAI-compatible server.

The REPL's ``/compare`` and ``bpo-local eval``'s target and judge use it. ``open_target(source)`` takes a
GGUF path or store name, or an ``http(s)://`` URL of a server speaking ``/v1/chat/completions``
(llama-server, vLLM, OpenAI), or several such URLs separated by commas (one model served by a fleet), and
returns a ``ChatTarget``; ``chat(messages, settings)`` streams one answer, ``complete_many`` answers many
conversations concurrently (a local model decodes them together in one continuous batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..backend import Timings
    from ..errors import BpoLocalError

Message = Mapping[str, str]
"""``{"role": "system" | "user" | "assistant", "content": text}``."""


@dataclass(frozen=True)
class ChatSettings:
    """How an answer is sampled; ``temperature == 0`` is greedy, ``top_p == 1`` is off."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    finish_reason: str
    """"stop", "length" or "cancelled" (a server's own word otherwise)."""
    timings: Timings


class ChatStream(Protocol):
    """Iterate for pieces of the answer as they arrive; ``result`` once done or cancelled."""

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None: ...

    @property
    def result(self) -> ChatAnswer: ...


class ChatTarget(Protocol):
    """A chat model loaded or connected once, answering many conversations."""

    @property
    def name(self) -> str:
        """How reports and the REPL name it: a GGUF's file name, a server's model id."""
        ...

    def identity(self) -> str:
        """What answers depend on, for caches: the GGUF's sha256, or the server's URL and model id."""
        ...

    def chat(self, messages: Sequence[Message], settings: ChatSettings = ChatSettings()) -> ChatStream: ...

    def complete_many(self, conversations: Sequence[Sequence[Message]], settings: ChatSettings = ChatSettings(), *,
                      parallel: int = 1) -> Iterator[tuple[int, ChatAnswer | BpoLocalError]]:
        """Answer every conversation, up to ``parallel`` at once (per server), yielding (its position, its answer or
        the error of that conversation alone) as each finishes, in any order. A model that cannot go on raises
        (TargetUnreachable: no request can succeed); closing the iterator stops the answers in flight."""
        ...

    def close(self) -> None: ...


def user_message(prompt: str) -> list[Message]:
    """A conversation of one user turn."""
    return [{"role": "user", "content": prompt}]


def complete(target: ChatTarget, messages: Sequence[Message], settings: ChatSettings = ChatSettings()) -> ChatAnswer:
    """The whole answer at once."""
    stream = target.chat(messages, settings)
    for _ in stream:
        pass
    return stream.result


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def open_target(source: str, *, model: str | None = None, key: str | None = None, gpu_layers: int | None = None,
                ctx: int | None = None, threads: int | None = None, cpu_buffers: str | None = None,
                verbose: bool = False) -> ChatTarget:
    """Load the GGUF ``source`` (a path or store name) or connect to the server at URL ``source``.

    Several URLs, separated by commas, are one fleet serving the same model. For a server, ``model`` is the model id to ask for (default: the first the server lists) and ``key``
    the bearer token; the local options are for a GGUF only. Fails here, before any answer, if the file
    cannot be loaded or has no chat template, or the server cannot be reached or refuses the key.
    """
    if is_url(source):
        from .openai import OpenAIChat

        return OpenAIChat([url.strip() for url in source.split(",") if url.strip()], model=model, key=key)
    from ..models.resolve import resolve_model
    from .local import LocalChat

    return LocalChat(resolve_model(os.fspath(source)), gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                     cpu_buffers=cpu_buffers, verbose=verbose)


__all__ = ["ChatAnswer", "ChatSettings", "ChatStream", "ChatTarget", "Message", "complete", "is_url", "open_target",
           "user_message"]
