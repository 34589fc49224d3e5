"""One exception hierarchy; each error carries a one-line message written for the user.

The CLI prints ``error: <message>`` and exits with ``exit_code``; nothing else maps errors to codes.
"""

from __future__ import annotations


class BpoLocalError(Exception):
    """Base class: a failure the user can act on. ``str(err)`` is the one-line message."""

    exit_code = 1


class UsageError(BpoLocalError):
    """The command line or its input is wrong (bad flag value, empty prompt, non-UTF-8 input)."""

    exit_code = 2


class ModelNotFound(BpoLocalError):
    """No model was given, configured or built, or the named one does not exist."""


class ModelLoadError(BpoLocalError):
    """The model file exists but cannot be loaded (truncated, not GGUF, unsupported)."""


class PromptTooLong(BpoLocalError):
    """The prompt plus the requested generation does not fit the context window."""


class GenerationError(BpoLocalError):
    """llama.cpp failed while evaluating or decoding."""


class ConversionError(BpoLocalError):
    """A checkpoint could not be converted or quantized."""


class DownloadError(BpoLocalError):
    """A checkpoint could not be fetched from the Hub."""


class StoreError(BpoLocalError):
    """The local model store is unusable or a build in it is missing or damaged."""


class ServerError(BpoLocalError):
    """A remote server cannot be reached, refused the request, or sent a reply that cannot be used."""


class Unsupported(UsageError):
    """The backend cannot reproduce a setting exactly (e.g. a server's sampler order)."""


class TargetError(BpoLocalError):
    """A chat model answering as a target or judge refused one request (an HTTP error, a prompt it
    cannot take); other requests may still succeed."""


class TargetUnreachable(TargetError):
    """A target or judge server cannot be reached, or refuses the credentials: no request can succeed."""
