"""An assistant's answer in no API's shape: what every dialect reads from an upstream and renders for its
clients, whole (``Answer``) or as a stream of ``Piece``s ending in one ``End`` (or, where something failed
after the stream began, one ``Failed``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from .errors import ApiError

Finish = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ToolCall:
    """A function call the assistant asks for: ``arguments`` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> Any:
        """The arguments as a JSON value (an empty object where they are not JSON)."""
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return {}


@dataclass(frozen=True)
class Answer:
    """A whole answer; ``extra`` holds fields added beside the API's own (BPO's ``bpo`` record)."""

    model: str
    text: str
    finish: Finish = "stop"
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class ToolCallPiece:
    """Part of the ``index``-th tool call: its id and name come with its first piece, arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class End:
    """The stream's end; ``extra`` goes on the last event a dialect sends."""

    finish: Finish = "stop"
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """The stream's end where something failed after it began: each dialect sends its API's error event."""

    error: ApiError


Piece = Union[TextPiece, ToolCallPiece, End, Failed]


def finish_of(reason: Any) -> Finish:
    """OpenAI's ``finish_reason`` (or Ollama's ``done_reason``) as a Finish."""
    return "length" if reason == "length" else "tool_calls" if reason in ("tool_calls", "function_call") else "stop"
