"""RemoteBackend: the ``Backend`` contract over a fleet of servers of one kind serving one model.

Tokenizing asks a server (its own tokenizer, so BOS and plain text are exact); generation streams
from the fleet in worker threads: ``generate`` hands TokenEvents over as they arrive,
``generate_many`` keeps up to ``max_sequences`` sequences in flight per server and reports each
request once, when it is done (after any retries), with ``RequestDone``.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ...backend import GenerationResult, ModelInfo, Request, RequestDone, TokenEvent
from ...errors import BpoLocalError, PromptTooLong, ServerError, ServerRejected, UsageError
from .endpoint import Endpoint
from .fleet import Fleet

_END = object()
_IDLE_SECONDS = 0.005
"""How long the feeder waits when the requests say "nothing to start now"."""


class RemoteBackend:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        head = fleet.endpoints[0]
        facts = head.facts
        self.capabilities = head.capabilities
        self.eos_token = facts.eos_token
        urls = ", ".join(e.server.url for e in fleet.endpoints)
        said = {"url": facts.url, "kind": facts.kind, "version": facts.version, "slots": facts.slots}
        self.info = ModelInfo(name=facts.model.rsplit("/", 1)[-1], title=facts.model, n_ctx=facts.n_ctx,
                              backend=f"{facts.kind} {urls}", chat_template=facts.chat_template,
                              metadata={k: str(v) for k, v in said.items() if v is not None})

    def _any(self, call):  # type: ignore[no-untyped-def]
        """``call(endpoint)`` on a server, retried on another if one fails."""
        return self.fleet.run(0, None, call)

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = False) -> list[int]:
        return self._any(lambda e: e.tokenize(text, add_bos=add_bos, parse_special=parse_special))

    def detokenize(self, tokens: Sequence[int], *, skip_special: bool = True) -> str:
        return self._any(lambda e: e.detokenize(tokens))

    def token_for_piece(self, piece: str) -> int | None:
        return self._any(lambda e: e.token_for_piece(piece))

    def generate(self, request: Request) -> RemoteGeneration:
        return RemoteGeneration(self.fleet, request)

    def generate_many(self, requests: Iterable[Request | None], *, max_sequences: int | None = None) -> RemoteBatch:
        return RemoteBatch(self.fleet, requests, max_sequences)

    def close(self) -> None:
        for endpoint in self.fleet.endpoints:
            endpoint.server.close()


def _seed(request: Request) -> int:
    return request.sampling.seed if request.sampling.seed is not None else random.randrange(2**32)


class RemoteGeneration:
    """One request streamed from one server (moved to another only while nothing was shown)."""

    def __init__(self, fleet: Fleet, request: Request) -> None:
        self._events: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self.seed = _seed(request)
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        shown = threading.Event()

        def emit(event: TokenEvent) -> None:
            shown.set()
            self._events.put(event)

        def work() -> None:
            try:
                self._result = fleet.run(request.n, None,
                                         lambda e: e.run(request, self.seed, emit, self._cancelled),
                                         retryable=lambda: not shown.is_set())
            except BaseException as exc:  # handed to the reader
                self._error = exc
            self._events.put(_END)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[TokenEvent]:
        while (event := self._events.get()) is not _END:
            yield event  # type: ignore[misc]
        self._events.put(_END)
        if self._error is not None and not self._cancelled.is_set():
            raise self._error

    def cancel(self) -> None:
        """Stop at the server's next chunk (``result`` waits for it); it never blocks: a signal handler may call it."""
        self._cancelled.set()

    @property
    def result(self) -> GenerationResult:
        self._thread.join()
        if self._result is None:
            raise self._error if isinstance(self._error, BpoLocalError) else ServerError("the generation was cancelled before it started")
        return self._result


class RemoteBatch:
    """Requests spread over the fleet: (request index, TokenEvent) per token as it streams, one
    ``RequestDone`` per request as it finishes. A request's own error (too long, rejected) is its
    RequestDone; a fleet that cannot go on raises. A request whose server fails is retried whole on
    another, even mid-stream (nothing is lost); only its first attempt streams token events."""

    def __init__(self, fleet: Fleet, requests: Iterable[Request | None], max_sequences: int | None) -> None:
        self._fleet = fleet
        self._done: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self._stops: dict[int, threading.Event] = {}
        self._submitted = 0
        workers = (max_sequences or 1) * len(fleet.endpoints)
        self._pool = ThreadPoolExecutor(workers)
        self._feeder = threading.Thread(target=self._feed, args=(iter(requests), max_sequences), daemon=True)
        self._feeder.start()

    def _feed(self, requests: Iterator[Request | None], limit: int | None) -> None:
        index = 0
        try:
            for request in requests:
                if request is None:  # nothing to start now: ask again shortly
                    time.sleep(_IDLE_SECONDS)
                    continue
                server = self._fleet.acquire(request.n, limit)
                if self._cancelled.is_set():
                    self._fleet.release(server, request.n, failed=False)
                    return
                stop = self._stops.setdefault(index, threading.Event())
                self._submitted += 1
                self._pool.submit(self._one, index, request, limit, server, stop)
                index += 1
        except BaseException as exc:  # e.g. tokenizing failed on every server: the batch cannot go on
            self._done.put(exc)
        finally:
            self._done.put(_END)

    def _one(self, index: int, request: Request, limit: int | None, server: int, stop: threading.Event) -> None:
        seed = _seed(request)
        attempts = 0

        def attempt(endpoint: Endpoint) -> GenerationResult:
            """One try on ``endpoint``; only the first streams its tokens, so a retry (after a server died
            mid-stream) never repeats text already shown: its whole result arrives in the RequestDone."""
            nonlocal attempts
            attempts += 1
            first = attempts == 1
            return endpoint.run(request, seed, lambda event: self._done.put((index, event)) if first else None, stop)

        try:
            result = self._fleet.run(request.n, limit, attempt, first=server)
            self._done.put(RequestDone(index, result=result))
        except (ServerRejected, PromptTooLong, UsageError) as exc:  # this request's own fault: the others go on
            self._done.put(RequestDone(index, error=exc))
        except BaseException as exc:
            self._done.put(exc)

    def __iter__(self) -> Iterator[tuple[int, TokenEvent] | RequestDone]:
        fed = False
        answered = 0
        while not fed or answered < self._submitted:
            item = self._done.get()
            if item is _END:
                fed = True
            elif isinstance(item, BaseException):
                self.cancel()
                raise item
            else:
                answered += isinstance(item, RequestDone)
                yield item  # type: ignore[misc]

    def cancel_request(self, index: int) -> None:
        """Stop request ``index`` alone: it ends "cancelled" at its next token; the others go on."""
        self._stops.setdefault(index, threading.Event()).set()

    def cancel(self) -> None:
        """Stop: nothing new starts, requests in flight stop at their next token."""
        self._cancelled.set()
        for stop in list(self._stops.values()):
            stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
