"""A chat model behind an OpenAI-compatible server (llama-server, vLLM, OpenAI): ``/v1/chat/completions``
streamed as server-sent events, over httpx.

Opening lists the server's models (``GET /v1/models``): that proves it is reachable and takes the key,
and names the model when none is given. A 401/403 or a connection failure raises ``TargetUnreachable``;
any other HTTP error raises ``TargetError`` with the server's own message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ..backend import Timings
from ..backends.remote.http import transport_error
from ..errors import TargetError, TargetUnreachable
from . import ChatAnswer, ChatSettings, Message

TIMEOUT = httpx.Timeout(30.0, read=600.0)
"""Connecting may take 30 s; a slow server may think 10 minutes between two pieces of an answer."""


def api_base(url: str) -> str:
    """``http://host:port`` or ``…/v1`` (a trailing slash or not) -> ``…/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class OpenAIChat:
    """One model on one OpenAI-compatible server; answers are streamed."""

    def __init__(self, url: str, *, model: str | None = None, key: str | None = None) -> None:
        self.base = api_base(url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=TIMEOUT)
        try:
            self.model = model or self._first_model()
        except BaseException:
            self.close()
            raise

    def _first_model(self) -> str:
        response = _send(self._client, self._client.build_request("GET", f"{self.base}/models"))
        try:
            models = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"{self.base}/models did not answer an OpenAI model list") from exc
        if not models:
            raise TargetError(f"{self.base} serves no models")
        return models[0]

    @property
    def name(self) -> str:
        return self.model

    def identity(self) -> str:
        return f"openai:{self.base} {self.model}"

    def chat(self, messages: Sequence[Message], settings: ChatSettings = ChatSettings()) -> OpenAIStream:
        body: dict[str, Any] = {
            "model": self.model, "messages": [dict(m) for m in messages], "stream": True,
            "max_tokens": settings.max_tokens, "temperature": settings.temperature, "top_p": settings.top_p,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        request = self._client.build_request("POST", f"{self.base}/chat/completions", json=body)
        return OpenAIStream(_send(self._client, request, stream=True), self.base)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send(client: httpx.Client, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
    """The response to ``request``, or the failure in the package's terms."""
    try:
        response = client.send(request, stream=stream)
    except httpx.TransportError as exc:
        raise transport_error(exc, str(request.url), TargetUnreachable) from exc
    if response.status_code < 400:
        return response
    try:
        detail = _error_message(response.read())
    finally:
        response.close()
    message = f"{request.url} answered HTTP {response.status_code}{': ' + detail if detail else ''}"
    if response.status_code in (401, 403):
        raise TargetUnreachable(message)
    raise TargetError(message)


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's first line."""
    try:
        error = json.loads(body).get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = None
    text = text if isinstance(text, str) else body.decode("utf-8", "replace")
    return text.strip().splitlines()[0][:300] if text.strip() else ""


class OpenAIStream:
    """One streamed answer: pieces from the ``data:`` events until ``[DONE]``."""

    def __init__(self, response: httpx.Response, base: str) -> None:
        self._response = response
        self._base = base
        self._start = time.monotonic()
        self._first: float | None = None
        self._parts: list[str] = []
        self._finish = "stop"
        self._usage: dict[str, int] = {}
        self._cancelled = False
        self._done = False

    def __iter__(self) -> Iterator[str]:
        if self._done:
            return
        try:
            for line in self._response.iter_lines():
                if self._cancelled:
                    self._finish = "cancelled"
                    break
                data = line[len("data:"):].strip() if line.startswith("data:") else ""
                if not data:
                    continue
                if data == "[DONE]":
                    break
                piece = self._event(data)
                if piece:
                    self._first = self._first or time.monotonic()
                    self._parts.append(piece)
                    yield piece
        except httpx.TransportError as exc:
            raise transport_error(exc, self._base, TargetUnreachable) from exc
        finally:
            self._done = True
            self._response.close()

    def _event(self, data: str) -> str:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise TargetError(f"{self._base} sent an event that is not JSON: {data[:80]!r}") from exc
        if chunk.get("error"):
            raise TargetError(f"{self._base} failed mid-answer: {_error_message(data.encode())}")
        self._usage = chunk.get("usage") or self._usage
        piece = ""
        for choice in chunk.get("choices") or ():
            piece += (choice.get("delta") or {}).get("content") or ""
            self._finish = choice.get("finish_reason") or self._finish
        return piece

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def result(self) -> ChatAnswer:
        for _ in self:
            pass
        end = time.monotonic()
        first = (self._first or end) - self._start
        timings = Timings(
            prompt_tokens=self._usage.get("prompt_tokens", 0), cached_prompt_tokens=0, prompt_seconds=first,
            first_token_seconds=first, generated_tokens=self._usage.get("completion_tokens", len(self._parts)),
            decode_seconds=end - self._start - first, total_seconds=end - self._start,
        )
        return ChatAnswer("".join(self._parts).strip(), self._finish, timings)
