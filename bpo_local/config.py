"""Where bpo-local keeps things, the user's TOML config, and which model it names."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP_NAME = "bpo-local"
HOME_ENV = "BPO_LOCAL_HOME"
MODEL_ENV = "BPO_LOCAL_MODEL"
SERVER_ENV = "BPO_LOCAL_SERVER"
SERVER_KEY_ENV = "BPO_LOCAL_SERVER_KEY"


def _home() -> Path | None:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    """Model store and run log live here (``$BPO_LOCAL_HOME`` overrides the platform default)."""
    return _home() or platformdirs.user_data_path(APP_NAME)


def config_dir() -> Path:
    return _home() or platformdirs.user_config_path(APP_NAME)


def state_dir() -> Path:
    """REPL history and other state that is not worth backing up."""
    return _home() or platformdirs.user_state_path(APP_NAME)


def private_dirs(path: Path) -> None:
    """Create ``path`` and every missing folder above it for this user only (0700), so the data
    folder is private whichever write creates it first; folders that exist are left as they are."""
    missing = []
    folder = path
    while not folder.exists():  # up to the first folder that exists, not every stat up to /
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def private_file(path: Path) -> Path:
    """Create ``path`` (and its folders, if missing) for this user only: 0600 in a 0700 folder. An
    existing file is narrowed to 0600 too. The run log and the REPL history hold every prompt."""
    private_dirs(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path


def config_path() -> Path:
    return config_dir() / "config.toml"


def models_dir() -> Path:
    return data_dir() / "models"


def rewrite_store_path() -> Path:
    """The proxy's rewrite store (``serve/store.py``), SQLite."""
    return data_dir() / "rewrites.db"


@dataclass(frozen=True)
class Config:
    """Settings from ``config.toml``; every field may be overridden on the command line."""

    model: str | None = None
    gpu_layers: int | None = None
    ctx: int | None = None
    threads: int | None = None
    cpu_buffers: str | None = None
    """"auto", "all" or "none": which extra CPU weight buffer types llama.cpp may use (see ``--cpu-buffers``)."""
    server: tuple[str, ...] = ()
    """llama-server / vLLM URLs to use instead of a local model (``server = ["http://h:8080"]``)."""
    server_kind: str | None = None
    server_key: str | None = None


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file is an empty config, a broken one a clear error."""
    path = path or config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}; fix or delete it") from exc
    known = {f: raw[f] for f in Config.__dataclass_fields__ if f in raw}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in {path}; known: {', '.join(Config.__dataclass_fields__)}")
    if "cpu_buffers" in known:
        from .backends.llamacpp.buffers import POLICIES

        if known["cpu_buffers"] not in POLICIES:
            raise UsageError(f"cpu_buffers = {known['cpu_buffers']!r} in {path} is not one of {', '.join(POLICIES)}")
    if isinstance(known.get("server"), str):
        known["server"] = (known["server"],)
    if "server" in known:
        if not isinstance(known["server"], list | tuple) or not all(isinstance(u, str) for u in known["server"]):
            raise UsageError(f"`server` in {path} must be a URL or a list of URLs")
        known["server"] = tuple(known["server"])
    return Config(**known)


def configured_model(arg: str | None, config: Config) -> str | None:
    """The model named by ``--model``, else ``$BPO_LOCAL_MODEL``, else the config; None if none is."""
    return arg or os.environ.get(MODEL_ENV) or config.model or None


def split_urls(values: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...]:
    """URLs given repeatedly and/or comma-separated, in order, without blanks."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    return tuple(u.strip() for item in items for u in item.split(",") if u.strip())


def configured_servers(args: list[str] | None, model_arg: str | None, config: Config) -> tuple[str, ...]:
    """The servers to use: ``--server``, else (unless ``--model`` is given) ``$BPO_LOCAL_SERVER``, else
    (unless a model is set in the environment) the config's ``server``; empty: use a local model."""
    if args:
        return split_urls(args)
    if model_arg:
        return ()
    if os.environ.get(SERVER_ENV):
        return split_urls(os.environ[SERVER_ENV])
    if os.environ.get(MODEL_ENV):
        return ()
    return config.server


def configured_server_key(arg: str | None, config: Config) -> str | None:
    return arg or os.environ.get(SERVER_KEY_ENV) or config.server_key or None
