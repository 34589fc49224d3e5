"""Which GGUF file a command means: a path, a store name such as ``bpo:q4_k_m``, or the best build."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config, config_path, configured_model, load_config, models_dir
from ..errors import ModelIsFolder, ModelNotFound, NoModel
from .store import ModelStore


def resolve_model(arg: str | None, config: Config | None = None) -> Path:
    """The GGUF file to load: the ``configured_model`` (a path or a store name such as
    ``bpo:q4_k_m``), else the best build in the model store."""
    config = config or load_config()
    store = ModelStore(models_dir())
    source = configured_model(arg, config)
    if source is not None:
        return _locate(source, store)
    best = store.best()
    if best is None:
        raise NoModel(config_path())
    return best


def _locate(name: str, store: ModelStore) -> Path:
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in name:
        if path.is_dir():
            raise ModelIsFolder(path)
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path}; check the path or run `bpo-local models`")
        return path
    return store.resolve(name)
