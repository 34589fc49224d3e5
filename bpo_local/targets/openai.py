"""A chat model behind an OpenAI-compatible server (llama-server, vLLM, OpenAI), or several serving the same
model: ``/v1/chat/completions`` streamed as server-sent events, over httpx.

Opening lists each server's models (``GET /v1/models``): that proves it is reachable and takes the key,
and names the model when none is given. A 401/403 raises ``TargetUnreachable``, a connection failure its
``TargetDown``; 429, 502, 503 and 504 raise ``TargetBusy`` with the wait the server asked for; any other
HTTP error raises ``TargetError`` with the server's own message.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from .. import sse
from ..backend import Timings
from ..backends.remote.http import transport_error
from ..backends.remote.pushback import PUSHBACK_STATUSES, backoff, wait_hint, Window
from ..errors import BpoLocalError, ServerError, ServerUnreachable, TargetBusy, TargetDown, TargetError, TargetUnreachable
from . import ChatAnswer, ChatSettings, Message

if TYPE_CHECKING:
    from ..backends.remote import Fleet

TIMEOUT = httpx.Timeout(30.0, read=600.0)
"""Connecting may take 30 s; a slow server may think 10 minutes between two pieces of an answer."""
BUSY_ATTEMPTS = 10
"""Tries of one request while its servers push back (waits of up to a minute each, or as long as they ask)."""


def api_base(url: str) -> str:
    """``http://host:port`` or ``…/v1`` (a trailing slash or not) -> ``…/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class Connection:
    """One server of a target: its API base and its client (a pool of connections, shared by threads)."""

    def __init__(self, url: str, key: str | None) -> None:
        self.base = api_base(url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=TIMEOUT,
                                   limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def models(self) -> list[str]:
        response = _send(self.client, self.client.build_request("GET", f"{self.base}/models"))
        try:
            return [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"{self.base}/models did not answer an OpenAI model list") from exc

    def chat(self, body: dict[str, Any]) -> OpenAIStream:
        request = self.client.build_request("POST", f"{self.base}/chat/completions", json=body)
        return OpenAIStream(_send(self.client, request, stream=True), self.base)


class OpenAIChat:
    """One model on one OpenAI-compatible server, or on several serving it as a fleet; answers are streamed.

    ``complete_many`` keeps ``parallel`` requests in flight per server (least-outstanding placement, a
    request whose server stops answering retried on another, as ``--server`` fleets do); a server that
    pushes back (429, 503, ...) is waited out as it asks and sent fewer requests until it recovers."""

    def __init__(self, urls: str | Sequence[str], *, model: str | None = None, key: str | None = None) -> None:
        from ..backends.remote import Fleet

        self.connections = [Connection(url, key) for url in dict.fromkeys([urls] if isinstance(urls, str) else urls)]
        self.base = self.connections[0].base
        self._fleet: Fleet[Connection] = Fleet(self.connections)
        try:
            self.model = model or self._first_model()
        except BaseException:
            self.close()
            raise

    def _first_model(self) -> str:
        listed = [connection.models() for connection in self.connections]
        if not listed[0]:
            raise TargetError(f"{self.base} serves no models")
        model = listed[0][0]
        for connection, models in zip(self.connections[1:], listed[1:]):
            if model not in models:
                raise TargetError(f"{connection.base} does not serve {model}, which {self.base} lists first; "
                                  f"name the model every server serves")
        return model

    @property
    def name(self) -> str:
        return self.model

    def identity(self) -> str:
        return f"openai:{','.join(c.base for c in self.connections)} {self.model}"

    def chat(self, messages: Sequence[Message], settings: ChatSettings = ChatSettings()) -> OpenAIStream:
        return self.connections[0].chat(self._body(messages, settings))

    def _body(self, messages: Sequence[Message], settings: ChatSettings) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "messages": [dict(m) for m in messages], "stream": True,
            "max_tokens": settings.max_tokens, "temperature": settings.temperature, "top_p": settings.top_p,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        return body

    def complete_many(self, conversations: Sequence[Sequence[Message]], settings: ChatSettings = ChatSettings(), *,
                      parallel: int = 1) -> Iterator[tuple[int, ChatAnswer | BpoLocalError]]:
        """Every conversation's answer, ``parallel`` in flight per server, as each finishes: (its position, the
        answer or its own error). Raises TargetUnreachable when no server answers; leaving stops the rest."""
        return _Answering(self, self._fleet, conversations, settings, parallel).results()

    def close(self) -> None:
        for connection in self.connections:
            connection.client.close()

    def __enter__(self) -> OpenAIChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Answering:
    """One ``complete_many``: worker threads taking conversations from a queue and handing back outcomes."""

    def __init__(self, chat: OpenAIChat, fleet: Fleet[Connection], conversations: Sequence[Sequence[Message]],
                 settings: ChatSettings, parallel: int) -> None:
        self._chat, self._fleet, self._settings, self._parallel = chat, fleet, settings, parallel
        self._conversations = list(conversations)
        self._windows = {connection: Window(parallel) for connection in chat.connections}
        self._todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[int, ChatAnswer | BpoLocalError] | BaseException] = queue.SimpleQueue()
        self._stop = threading.Event()

    def results(self) -> Iterator[tuple[int, ChatAnswer | BpoLocalError]]:
        for index in range(len(self._conversations)):
            self._todo.put(index)
        workers = min(len(self._conversations), self._parallel * len(self._chat.connections))
        for _ in range(workers):
            threading.Thread(target=self._work, name="bpo-target", daemon=True).start()
        try:
            for _ in self._conversations:
                while True:
                    try:
                        outcome = self._done.get(timeout=0.5)  # a timeout, so Ctrl-C is seen at once
                        break
                    except queue.Empty:
                        continue
                if isinstance(outcome, BaseException):
                    raise outcome
                yield outcome
        finally:
            self._stop.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                index = self._todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._done.put((index, self._answer(self._conversations[index])))
            except TargetUnreachable as exc:  # no request can succeed: the caller stops
                self._done.put(exc)
                return
            except BpoLocalError as exc:  # this conversation's own failure
                self._done.put((index, exc))
            except BaseException as exc:  # a bug: the caller raises it
                self._done.put(exc)
                return

    def _answer(self, messages: Sequence[Message]) -> ChatAnswer:
        """The answer to ``messages``, waited out while servers push back and retried elsewhere when one fails."""
        body = self._chat._body(messages, self._settings)
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                return self._fleet.run(1, self._parallel, lambda connection: self._once(connection, body))
            except TargetBusy as exc:
                if attempt == BUSY_ATTEMPTS:
                    raise TargetError(f"{exc}; it pushed back {attempt} times") from exc
                if self._stop.wait(backoff(attempt, exc.wait)):
                    raise TargetError("stopped while waiting for the server") from exc
            except ServerError as exc:  # every try found its server not answering
                raise TargetDown(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, connection: Connection, body: dict[str, Any]) -> ChatAnswer:
        """One try on ``connection``, within its window; a server that does not answer is the fleet's to retry."""
        window = self._windows[connection]
        window.enter()
        try:
            stream = connection.chat(body)
            for _ in stream:
                if self._stop.is_set():
                    stream.cancel()
            answer = stream.result
        except TargetBusy as exc:
            window.leave(pushed_back=True, quiet=exc.wait or 0.0)
            raise
        except TargetDown as exc:
            window.leave()
            raise ServerUnreachable(str(exc)) from exc
        except BaseException:
            window.leave()
            raise
        window.leave()
        return answer


def _send(client: httpx.Client, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
    """The response to ``request``, or the failure in the package's terms."""
    try:
        response = client.send(request, stream=stream)
    except httpx.TransportError as exc:
        raise transport_error(exc, str(request.url), TargetDown) from exc
    status = response.status_code
    if status < 400:
        return response
    try:
        detail = _error_message(response.read())
    finally:
        response.close()
    message = f"{request.url} answered HTTP {status}{': ' + detail if detail else ''}"
    if status in (401, 403):
        raise TargetUnreachable(message)
    if status in PUSHBACK_STATUSES:
        raise TargetBusy(message, status, wait_hint(response.headers))
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
            for event in sse.events(self._response.iter_bytes()):
                if self._cancelled:
                    self._finish = "cancelled"
                    break
                if not event.data:
                    continue
                if event.data == sse.DONE:
                    break
                piece = self._event(event.data)
                if piece:
                    self._first = self._first or time.monotonic()
                    self._parts.append(piece)
                    yield piece
        except httpx.TransportError as exc:
            raise transport_error(exc, self._base, TargetDown) from exc
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
