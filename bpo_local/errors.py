"""One exception hierarchy; each error states what happened in facts (sizes, names, paths), never a flag.

A face adds the advice in its own terms, each in one table: the CLI a flag (``cli/advice.py``), the REPL
a command (``repl/advice.py``), HTTP a status and the field a client can change (``serve/errors.py``).
Typed errors keep their facts as attributes for those tables. ``exit_code`` is the CLI's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Advice = Sequence[tuple[type["BpoLocalError"], Callable[[Any], str]]]
"""A face's table: error class -> the whole line it shows for it (the facts, then its own advice)."""


def explain(table: Advice, err: BpoLocalError) -> str:
    """The line of the first row whose class ``err`` is (most specific rows first); else its facts alone."""
    return next((line(err) for cls, line in table if isinstance(err, cls)), str(err))


class BpoLocalError(Exception):
    """Base class: a failure the user can act on. ``str(err)`` is the one-line message.

    ``exit_code``, the CLI's one rule: 2 when what the user gave is wrong and they can fix it (a flag, a
    path, a name, a prompt), 1 when the run failed (a server, the disk, a damaged file, llama.cpp)."""

    exit_code = 1


class UsageError(BpoLocalError):
    """The command line or its input is wrong (bad value, empty prompt, non-UTF-8 input)."""

    exit_code = 2


class InvalidSetting(UsageError):
    """A numeric setting (``ctx``, ``threads``, ``parallel``...) is below its minimum."""

    def __init__(self, name: str, value: int, minimum: int = 1) -> None:
        super().__init__(f"{name} must be at least {minimum} (got {value})")
        self.name, self.value, self.minimum = name, value, minimum


class TwoBackends(UsageError):
    """Both a model and servers were given: they name two different backends."""

    def __init__(self, model: str, servers: tuple[str, ...]) -> None:
        super().__init__(f"a model ({model}) and servers ({', '.join(servers)}) name two different backends; give one")
        self.model, self.servers = model, servers


class BuildPresetsUnreadable(UsageError):
    """The presets a build's GGUF carries (metadata ``key``) are not JSON."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"the model's {key} is not JSON ({reason}); rebuild it")
        self.key = key


class Unsupported(UsageError):
    """The backend cannot reproduce a setting exactly (e.g. a server's sampler order)."""


class ModelNotFound(BpoLocalError):
    """No model was given, configured or built, or the named one does not exist."""

    exit_code = 2


class NoModel(ModelNotFound):
    """Nothing names a model (no argument, environment or config entry) and the store has no build."""

    def __init__(self, config: Path) -> None:
        super().__init__(f"no model: none was given or set in BPO_LOCAL_MODEL or {config}, and the store has no build")
        self.config = config


class ModelLoadError(BpoLocalError):
    """The model file exists but cannot be loaded (truncated, not GGUF, unsupported)."""


class ModelIsFolder(ModelLoadError):
    """The model path is a directory; ``checkpoint``: it holds a Hugging Face checkpoint (``config.json``)."""

    exit_code = 2

    def __init__(self, path: Path) -> None:
        self.path, self.checkpoint = path, (path / "config.json").is_file()
        kind = "a Hugging Face checkpoint folder" if self.checkpoint else "a directory"
        super().__init__(f"{path} is {kind}, not a GGUF file")


class LlamaCppRefused(ModelLoadError):
    """llama.cpp would not load the model: ``device`` offload failed (None: on the CPU, the file is bad)."""

    def __init__(self, name: str, device: str | None) -> None:
        what = (f"could not load {name} with {device} offload (the GPU may be out of memory)" if device else
                f"model file {name} is truncated, damaged or of an unsupported architecture; re-download or rebuild it")
        super().__init__(what)
        self.name, self.device = name, device


class ContextTooBig(ModelLoadError):
    """llama.cpp could not allocate a context of ``n_ctx`` tokens (memory)."""

    def __init__(self, name: str, n_ctx: int) -> None:
        super().__init__(f"could not create a context of {n_ctx} tokens for {name}")
        self.name, self.n_ctx = name, n_ctx


class PromptTooLong(BpoLocalError):
    """The prompt does not fit the context window: ``n_tokens`` against ``n_ctx`` (``where`` holds it)."""

    exit_code = 2

    def __init__(self, n_tokens: int, n_ctx: int, *, where: str = "the context", n_ctx_train: int | None = None,
                 detail: str = "") -> None:
        most = f" (this model supports up to {n_ctx_train})" if n_ctx_train else ""
        super().__init__(detail or f"prompt is {n_tokens} tokens but {where} holds {n_ctx}{most}")
        self.n_tokens, self.n_ctx, self.n_ctx_train = n_tokens, n_ctx, n_ctx_train


class GenerationError(BpoLocalError):
    """llama.cpp failed while evaluating or decoding."""


class ContextFull(GenerationError):
    def __init__(self, n_ctx: int) -> None:
        super().__init__(f"the context of {n_ctx} tokens is full")
        self.n_ctx = n_ctx


class DecodeFailed(GenerationError):
    def __init__(self, code: int) -> None:
        super().__init__(f"llama.cpp failed to decode a batch (code {code})")
        self.code = code


class ConversionError(BpoLocalError):
    """A checkpoint could not be converted or quantized."""


class NoDiskSpace(ConversionError):
    """``folder`` has less free space than a build of type ``outtype`` needs (``need`` bytes)."""

    def __init__(self, folder: Path, need: int, outtype: str) -> None:
        size = f"{need / 1e9:.1f} GB" if need >= 1e9 else f"{need / 1e6:.0f} MB"
        super().__init__(f"not enough disk space in {folder}: need ~{size}")
        self.folder, self.need, self.outtype = folder, need, outtype


class DownloadError(BpoLocalError):
    """A checkpoint could not be fetched from the Hub."""


class NotCached(DownloadError):
    """The Hub cannot be used (``why``; ``unreachable``: no connection) and ``repo_id`` is not in its cache."""

    def __init__(self, repo_id: str, why: str, *, unreachable: bool) -> None:
        super().__init__(f"{why} and {repo_id} is not in the Hugging Face cache")
        self.repo_id, self.unreachable = repo_id, unreachable
        self.folder = repo_id.rsplit("/", 1)[-1]


class UnknownSource(DownloadError):
    """The source names no folder and no model on the Hub."""

    exit_code = 2


class NoSuchRevision(DownloadError):
    exit_code = 2

    def __init__(self, source: str, revision: str | None) -> None:
        super().__init__(f"{source} has no revision {revision!r}")
        self.source, self.revision = source, revision


class StoreError(BpoLocalError):
    """The local model store is unusable or a build in it is missing or damaged."""


class RunLogUnusable(BpoLocalError):
    """The run log cannot be opened or written (damaged, or of a newer schema)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"run log {path} {reason}")
        self.path = path


class RunLogTooNew(RunLogUnusable):
    """The run log was written by a newer bpo-local (its schema ``version`` is past ``known``)."""

    def __init__(self, path: Path, version: int, known: int) -> None:
        super().__init__(path, f"has schema version {version}, newer than this bpo-local knows ({known})")


class ResumeUnreadable(UsageError):
    """The output file a batch would resume cannot be opened."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot open {path} to resume: {reason}")
        self.path, self.reason = path, reason


class ServerError(BpoLocalError):
    """A remote server cannot be reached, refused the request, or sent a reply that cannot be used."""


class ServerUnreachable(ServerError):
    """The server did not answer usably (refused, dropped, timed out, 5xx, not its API); another may."""


class ServerRejected(ServerError):
    """The server refused this request (HTTP 400); another server would too."""


class ServerAuth(ServerError):
    """``url`` refused the credentials (HTTP 401/403): no request can succeed."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"{url} refused the API key (HTTP {status}: {detail})")
        self.url, self.status = url, status


class TargetError(BpoLocalError):
    """A chat model answering as a target or judge refused one request (an HTTP error, a prompt it
    cannot take); other requests may still succeed."""


class TargetUnreachable(TargetError):
    """A target or judge server cannot be reached, or refuses the credentials: no request can succeed."""


class TargetDown(TargetUnreachable):
    """A target or judge server did not answer (connection refused or dropped, time-out); another server of
    its fleet may."""


class TargetBusy(TargetError):
    """A target or judge server pushed back (``status`` 429, 502, 503 or 504): the same request may succeed
    later. ``wait`` is the seconds it asked for (Retry-After), None when it said nothing."""

    def __init__(self, message: str, status: int, wait: float | None) -> None:
        super().__init__(message)
        self.status, self.wait = status, wait


class QueueFull(BpoLocalError):
    """``serve``: every place in the request queue is taken."""


class ServerClosing(BpoLocalError):
    """``serve`` is shutting down and takes no new request."""


class RewriteStoreError(BpoLocalError):
    """``serve``'s rewrite store file cannot be opened or written."""


class UpstreamUnreachable(BpoLocalError):
    """``serve``'s proxy could not reach its upstream (refused, reset, DNS)."""


class UpstreamTimeout(BpoLocalError):
    """``serve``'s proxy upstream did not answer in time."""


class UpstreamError(Exception):
    """The upstream answered with an error status: its status and body are passed on as they are
    (not a ``BpoLocalError``: it is an answer to relay, not a failure to explain)."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type
