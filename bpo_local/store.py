"""Local model store (placeholder until the converter work lands it)."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelNotFound


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def best(self) -> Path | None:
        return None

    def resolve(self, name: str) -> Path:
        raise ModelNotFound(f"no build named {name!r} in the store")
