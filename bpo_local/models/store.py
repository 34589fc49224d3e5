"""The local model store: GGUF builds, each with a JSON manifest, under ``config.models_dir()``.

Layout::

    <root>/<model>/<model>-<quant>.gguf     the build (store name "<model>:<quant>", e.g. "bpo:q4_k_m")
    <root>/<model>/<model>-<quant>.json     its manifest, written last: a build counts only with it
    <root>/.locks/<model>-<quant>.lock      flock held while a build is written or removed
    <root>/.tmp/<run>/ + <run>.lock         one convert's scratch space, locked while it runs

Every write is atomic (temp file + ``os.replace``). Scratch space whose lock is free belongs to a run
that died (Ctrl-C, kill -9, power loss) and is removed by the next run.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import write_text_atomic
from ..config import private_dirs
from ..errors import ModelNotFound, StoreError
from ..gguf_header import read_header
from .digest import file_sha256

DEFAULT_ORDER = (
    "q4_k_m", "q5_k_m", "q6_k", "q8_0", "q5_k_s", "q4_k_s", "q5_0", "q5_1", "q4_0", "q4_1",
    "q3_k_l", "q3_k_m", "q3_k_s", "q2_k", "f16", "bf16", "f32",
)
"""Which build runs when none is named: Q4_K_M first (near-F16 quality on BPO at a quarter of the size,
and fast on CPU), then the larger K-quants, Q8_0, the smaller legacy quants, and full precision last."""

DEFAULT_MODEL = "bpo"
"""Preferred model name when the store holds several models."""

MANIFEST_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def model_name(repo_or_path: str) -> str:
    """Store model name from a Hub id or folder: its last part, lowercased (``THUDM/BPO`` -> ``bpo``)."""
    last = repo_or_path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", last).strip("-.")
    if not name or not _NAME.match(name):
        raise StoreError(f"cannot derive a model name from {repo_or_path!r}; pass a Hub id or folder with a name")
    return name


def split_name(name: str) -> tuple[str, str | None]:
    """``"bpo:q4_k_m"`` -> ``("bpo", "q4_k_m")``; ``"bpo"`` -> ``("bpo", None)``."""
    model, _, quant = name.strip().lower().partition(":")
    return model, quant or None


@dataclass(frozen=True)
class Build:
    """One build as its manifest describes it."""

    model: str
    quant: str
    path: Path
    source_repo: str | None
    source_revision: str | None
    sha256: str
    size_bytes: int
    n_params: int
    created: str
    tool: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.model}:{self.quant}"

    @property
    def manifest_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def bits_per_weight(self) -> float:
        return self.size_bytes * 8 / self.n_params if self.n_params else 0.0

    @property
    def intact(self) -> bool:
        """The GGUF is there with the size its manifest recorded (the hash is not re-read: too slow)."""
        try:
            return self.path.stat().st_size == self.size_bytes
        except OSError:
            return False

    def to_manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "model": self.model,
            "quant": self.quant,
            "file": self.path.name,
            "source": {"repo": self.source_repo, "revision": self.source_revision},
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "n_params": self.n_params,
            "created": self.created,
            "tool": self.tool,
            "verification": self.verification,
        }

    @classmethod
    def from_manifest(cls, manifest_path: Path) -> Build:
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
            return cls(
                model=raw["model"], quant=raw["quant"], path=manifest_path.with_name(raw["file"]),
                source_repo=raw["source"]["repo"], source_revision=raw["source"]["revision"],
                sha256=raw["sha256"], size_bytes=int(raw["size_bytes"]), n_params=int(raw["n_params"]),
                created=raw["created"], tool=dict(raw.get("tool") or {}), verification=raw.get("verification"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"damaged manifest {manifest_path} ({exc}); delete it and convert again") from exc


class ModelStore:
    """Builds under ``root``; safe for several processes at once (per-build flock, unique temp names)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading --------------------------------------------------------------------------------

    def builds(self) -> list[Build]:
        """Every build with a readable manifest, default-first (see ``DEFAULT_ORDER``)."""
        if not self.root.is_dir():
            return []
        found = []
        for manifest in self.root.glob("*/*.json"):
            try:
                found.append(Build.from_manifest(manifest))
            except StoreError:
                continue  # a foreign or damaged file is not a build
        return sorted(found, key=_rank)

    def get(self, name: str) -> Build:
        """The build called ``name`` (``model:quant``, or ``model`` for that model's default build)."""
        model, quant = split_name(name)
        for build in self.builds():
            if build.model == model and (quant is None or build.quant == quant):
                return build
        raise ModelNotFound(f"no build named {name!r}; `bpo-local models` lists them")

    def resolve(self, name: str) -> Path:
        """Store name -> GGUF path, checking that the file is still whole."""
        build = self.get(name)
        if not build.intact:
            raise StoreError(f"build {build.name} is damaged (its GGUF is missing or changed); "
                             f"run `bpo-local models rm {build.name}` and convert again")
        return build.path

    def best(self) -> Path | None:
        """The default build: the first intact one in ``DEFAULT_ORDER``, model ``bpo`` before others."""
        return next((b.path for b in self.builds() if b.intact), None)

    def path_for(self, model: str, quant: str) -> Path:
        return self.root / model / f"{model}-{quant}.gguf"

    # -- writing --------------------------------------------------------------------------------

    @contextmanager
    def lock(self, model: str, quant: str, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the build's lock; ``on_wait`` is called once if another process holds it."""
        with _locked(self.root / ".locks" / f"{model}-{quant}.lock", on_wait=on_wait):
            yield

    def add(self, gguf: Path, *, model: str, quant: str, source_repo: str | None, source_revision: str | None,
            tool: dict[str, str], verification: dict[str, Any] | None = None) -> Build:
        """Move ``gguf`` (a file in this store's scratch space) in as ``model:quant``, replacing any build
        of that name. The caller holds ``lock(model, quant)``."""
        path = self.path_for(model, quant)
        n_params = count_params(gguf)
        with _store_writes(self.root):
            private_dirs(path.parent)
            path.with_suffix(".json").unlink(missing_ok=True)  # an old manifest must never describe the new file
            os.replace(gguf, path)
            build = Build(
                model=model, quant=quant, path=path, source_repo=source_repo, source_revision=source_revision,
                sha256=file_sha256(path), size_bytes=path.stat().st_size, n_params=n_params,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), tool=tool,
                verification=verification,
            )
            _write_json(build.manifest_path, build.to_manifest())
        return build

    def set_verification(self, build: Build, verification: dict[str, Any]) -> Build:
        """Record verification results in the build's manifest."""
        updated = replace(build, verification=verification)
        with self.lock(build.model, build.quant), _store_writes(self.root):
            _write_json(updated.manifest_path, updated.to_manifest())
        return updated

    def remove(self, name: str) -> Build:
        """Delete a build: manifest first, so a crash halfway leaves no build that looks whole."""
        build = self.get(name)
        with self.lock(build.model, build.quant), _store_writes(self.root):
            build.manifest_path.unlink(missing_ok=True)
            build.path.unlink(missing_ok=True)
            try:
                build.path.parent.rmdir()
            except OSError:
                pass  # other builds of this model remain
        return build

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private scratch folder inside the store (same file system, so ``os.replace`` into place
        works), deleted on exit; stale ones left by dead runs are cleaned first."""
        self.clean_stale()
        tmp = self.root / ".tmp"
        with _store_writes(self.root):
            private_dirs(tmp)
        run = tmp / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with _locked(run.with_suffix(".lock")):  # locked before the folder exists: no cleaner takes it
            try:
                with _store_writes(self.root):
                    run.mkdir()
                yield run
            finally:
                shutil.rmtree(run, ignore_errors=True)
                run.with_suffix(".lock").unlink(missing_ok=True)

    def clean_stale(self) -> list[Path]:
        """Remove scratch folders of runs that died, and GGUFs whose manifest was never written."""
        removed: list[Path] = []
        tmp = self.root / ".tmp"
        runs = {p.with_suffix("") for p in tmp.iterdir()} if tmp.is_dir() else set()
        for run in sorted(runs):
            with _try_lock(run.with_suffix(".lock")) as free:
                if free:
                    shutil.rmtree(run, ignore_errors=True)
                    run.with_suffix(".lock").unlink(missing_ok=True)
                    removed.append(run)
        for gguf in self.root.glob("*/*.gguf") if self.root.is_dir() else ():
            if gguf.with_suffix(".json").exists() or not _is_build_file(gguf):
                continue  # a build, or a file the user put here
            with _try_lock(self.root / ".locks" / f"{gguf.stem}.lock") as free:
                if free and not gguf.with_suffix(".json").exists():
                    gguf.unlink(missing_ok=True)
                    removed.append(gguf)
        return removed


def count_params(gguf: Path) -> int:
    """Number of weights in a GGUF, from its tensor table."""
    try:
        return read_header(gguf).n_params
    except (OSError, ValueError) as exc:
        raise StoreError(f"{gguf} is not a readable GGUF ({exc}); convert it again") from exc


def _is_build_file(path: Path) -> bool:
    """Named the way ``add`` names builds: ``<model>/<model>-<quant>.gguf`` with a known quant."""
    from .quantize import QUANTS

    model = path.parent.name
    return path.stem.startswith(f"{model}-") and path.stem[len(model) + 1:] in QUANTS


def _rank(build: Build) -> tuple[int, int, str]:
    order = DEFAULT_ORDER.index(build.quant) if build.quant in DEFAULT_ORDER else len(DEFAULT_ORDER)
    return (build.model != DEFAULT_MODEL, order, build.model)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def _store_writes(root: Path) -> Iterator[None]:
    """Turn file-system failures while writing the store into one line with the fix."""
    try:
        yield
    except OSError as exc:
        hint = "free some disk space" if exc.errno == 28 else "check its permissions"
        raise StoreError(f"cannot write to the model store {root}: {exc.strerror or exc}; {hint}") from exc


def _acquire(path: Path, *, wait: bool, on_wait: Callable[[], None] | None = None) -> BinaryIO | None:
    """Open and flock ``path``; None if ``wait`` is False and another process holds it. Retries when the
    file was deleted or replaced while we waited, so a lock is always held on the file at ``path``."""
    with _store_writes(path.parent.parent):
        private_dirs(path.parent)
    while True:
        with _store_writes(path.parent.parent):
            f = open(path, "ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                f.close()
                return None
            if on_wait:
                on_wait()
                on_wait = None
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


@contextmanager
def _locked(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    f = _acquire(path, wait=True, on_wait=on_wait)
    assert f is not None
    with f:
        yield


@contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """Yield whether the lock was free (and hold it meanwhile)."""
    f = _acquire(path, wait=False)
    if f is None:
        yield False
        return
    with f:
        yield True
