"""Where presets come from besides the built-in ones: TOML files in the config folder, and a build's GGUF.

A user's preset is ``<config folder>/presets/<name>.toml`` holding ``Preset``'s fields (``template`` with
``{prompt}`` is the one it must give). A build carries its presets as GGUF keys: ``bpo.<name>.<field>``
typed, for people and other tools, and ``bpo.preset.definitions`` (JSON) with ``bpo.preset.default``, for
reading back, since llama.cpp shows arrays only as summaries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import BuildPresetsUnreadable, UsageError
from .presets import BUILTIN, Preset, preset_from_dict, preset_to_dict
from .suggest import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_KEY = "bpo.preset.default"
DEFINITIONS_KEY = "bpo.preset.definitions"


def user_presets_dir() -> Path:
    from .config import config_dir

    return config_dir() / "presets"


def load_preset_file(path: Path) -> Preset:
    """The preset in a TOML file, named by the file's stem; UsageError naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read preset file {path}: {exc}; fix or delete it") from None
    if data.setdefault("name", path.stem) != path.stem:
        raise UsageError(f"{path}: name {data['name']!r} differs from the file's; rename the file or drop `name`")
    preset = preset_from_dict(data, where=str(path))
    if preset.name in BUILTIN:
        raise UsageError(f"{path}: {preset.name!r} is a built-in preset's name; give yours another name")
    return preset


def user_presets(folder: Path | None = None) -> dict[str, Preset]:
    """Every ``*.toml`` preset in ``folder`` (default: the config folder's ``presets``), by name."""
    folder = folder or user_presets_dir()
    found = {}
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
        preset = load_preset_file(path)
        found[preset.name] = preset
    return found


def build_presets(metadata: Mapping[str, str]) -> tuple[str | None, dict[str, Preset]]:
    """The default preset name and the presets a build's GGUF metadata carries (none: None, {})."""
    text = metadata.get(DEFINITIONS_KEY)
    if not text:
        return metadata.get(DEFAULT_KEY), {}
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BuildPresetsUnreadable(DEFINITIONS_KEY, str(exc)) from None
    presets = {p.name: p for p in (preset_from_dict(item, where=f"the model's {DEFINITIONS_KEY}") for item in items)}
    return metadata.get(DEFAULT_KEY), presets


def builds_own_preset(metadata: Mapping[str, str]) -> Preset:
    """The preset a build names as its default (``bpo.preset.default``), else BPO's stable mode."""
    name, from_build = build_presets(metadata)
    return find_preset(name or "stable", from_build)


def known_presets(metadata: Mapping[str, str] | None = None, folder: Path | None = None) -> dict[str, Preset]:
    """Every preset a name may pick: built-in, then the build's own, then the user's TOML files."""
    _, from_build = build_presets(metadata or {})
    return {**BUILTIN, **from_build, **user_presets(folder)}


def find_preset(name: str, from_build: Mapping[str, Preset], folder: Path | None = None) -> Preset:
    """The preset ``name``: built-in, the build's own, else ``folder``'s ``NAME.toml`` (read only when
    asked for, so a broken file of the user's stops only its own runs)."""
    known = {**BUILTIN, **from_build}
    if name in known:
        return known[name]
    folder = folder or user_presets_dir()
    path = folder / f"{name}.toml"
    if path.is_file():
        return load_preset_file(path)
    names = preset_names(from_build, folder)
    raise UsageError(f"unknown preset {name!r}{did_you_mean(name, names)}; choose from: {', '.join(names)} "
                     f"(or add {path})")


def preset_names(from_build: Mapping[str, Preset], folder: Path | None = None) -> list[str]:
    """The names ``find_preset`` may be given: built-in, the build's own, then ``folder``'s TOML files
    (by file name, not read)."""
    known = [*BUILTIN, *(name for name in from_build if name not in BUILTIN)]
    folder = folder or user_presets_dir()
    return [*known, *sorted(p.stem for p in folder.glob("*.toml") if p.stem not in known)] if folder.is_dir() \
        else known


def gguf_metadata(presets: Iterable[Preset], default: str) -> dict[str, object]:
    """``presets`` as GGUF keys: typed ``bpo.<name>.<field>`` (unset values, empty lists left out: GGUF
    has no null or empty array), the JSON definitions and the default's name."""
    presets = list(presets)
    meta: dict[str, object] = {}
    for preset in presets:
        for key, value in preset_to_dict(preset).items():
            if key != "name" and value != []:
                meta[f"bpo.{preset.name}.{key}"] = value
    meta[DEFAULT_KEY] = default
    meta[DEFINITIONS_KEY] = json.dumps([preset_to_dict(p) for p in presets], ensure_ascii=False)
    return meta
