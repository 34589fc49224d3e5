"""Fetch a checkpoint from the Hugging Face Hub (only the files conversion needs) or use a folder.

``huggingface_hub`` does the work and honours HF_HOME, HF_TOKEN, HF_HUB_OFFLINE and HF_ENDPOINT;
its cache makes an interrupted download resume.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DownloadError, NoSuchRevision, NotCached, UnknownSource
from .reader import SAFETENSORS_INDEX, TORCH_INDEX

DEFAULT_SOURCE = "zai-org/BPO"
MOVED = {"THUDM/BPO": "zai-org/BPO", "zai-org/BPO": "THUDM/BPO"}
"""Hub names of one model (THUDM's repositories moved to zai-org): a cache holding either one serves both."""

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``; fetch_source reports ``("download", bytes_done, bytes_total)``."""

_SIDE_FILES = frozenset({
    "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json",
})
_WEIGHTS = (
    (re.compile(r"model(-\d+-of-\d+)?\.safetensors"), SAFETENSORS_INDEX),
    (re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin"), TORCH_INDEX),
)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class SourceCheckout:
    """A checkpoint folder on disk; ``repo_id``/``revision`` (a commit) when it came from the Hub."""

    path: Path
    repo_id: str | None
    revision: str | None


def fetch_source(source: str = DEFAULT_SOURCE, *, revision: str | None = None,
                 progress: Progress | None = None) -> SourceCheckout:
    """A local folder as is, or a Hub repo id downloaded (config, tokenizer, one weight format)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return SourceCheckout(folder.resolve(), None, None)
    if not _REPO_ID.fullmatch(source):
        raise UnknownSource(f"{source!r} is neither a folder nor a Hub repo id like {DEFAULT_SOURCE}")

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(source, revision=revision)
    except OfflineModeIsEnabled:
        return _cached(source, revision, "HF_HUB_OFFLINE is set")
    except GatedRepoError:
        raise DownloadError(f"{source} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise NoSuchRevision(source, revision) from None
    except RepositoryNotFoundError:
        raise UnknownSource(f"no model {source} on the Hub (if it is private, set HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        return _cached(source, revision, f"the Hub answered {_status(exc)}")
    except Exception as exc:  # connection refused, DNS, timeout: httpx/requests errors vary by version
        return _cached(source, revision, f"cannot reach the Hub ({type(exc).__name__})", unreachable=True)

    files = [s.rfilename for s in info.siblings or []]
    wanted = _needed_files(source, files)
    try:
        # by branch name, not info.sha: the cache then maps the branch to its commit for offline runs
        path = snapshot_download(source, revision=revision, allow_patterns=wanted,
                                 tqdm_class=_reporter(progress) if progress else None)
    except HfHubHTTPError as exc:
        raise DownloadError(
            f"download of {source} failed: the Hub answered {_status(exc)}; run again to resume") from None
    except OSError as exc:
        raise DownloadError(f"download of {source} failed ({exc.strerror or exc}); run again to resume") from None
    except Exception as exc:
        raise DownloadError(f"download of {source} failed ({type(exc).__name__}); run again to resume") from None
    return SourceCheckout(Path(path), source, Path(path).name)


def _needed_files(repo_id: str, files: list[str]) -> list[str]:
    """Config and tokenizer files, plus one weight format (safetensors preferred) with its index."""
    for pattern, index in _WEIGHTS:
        weights = [f for f in files if pattern.fullmatch(f) or f == index]
        if any(pattern.fullmatch(f) for f in weights):
            return sorted(_SIDE_FILES.intersection(files)) + sorted(weights)
    raise DownloadError(f"{repo_id} has no model.safetensors or pytorch_model.bin weights to convert")


def _cached(repo_id: str, revision: str | None, why: str, *, unreachable: bool = False) -> SourceCheckout:
    """``repo_id`` from the Hugging Face cache, under its own name or the name it moved from or to."""
    from huggingface_hub import try_to_load_from_cache

    for name in (repo_id, *([MOVED[repo_id]] if repo_id in MOVED else [])):
        config = try_to_load_from_cache(name, "config.json", revision=revision)
        if isinstance(config, str):
            path = Path(config).parent
            return SourceCheckout(path, repo_id, path.name)
    raise NotCached(repo_id, why, unreachable=unreachable)


def _status(exc: Any) -> str:
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else str(exc).splitlines()[0]


def _reporter(progress: Progress) -> type:
    """A tqdm class for huggingface_hub that reports its bytes-downloaded bar as ``download``."""
    from tqdm.auto import tqdm

    class Reporter(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            self._reports = str(kwargs.get("desc") or "").startswith("Downloading")
            self._done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if self._reports:
                progress("download", self._done, int(self.total or 0))
            return None

    return Reporter
