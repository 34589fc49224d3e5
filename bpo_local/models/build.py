"""One ``bpo-local convert`` run: fetch -> F16 GGUF -> quantize -> verify -> store; and the first-run offer.

All intermediate files live in a scratch folder inside the store (``ModelStore.workspace``): a run that
fails or is killed leaves nothing behind that the next run does not clean up, and a build appears in the
store only when its GGUF and then its manifest are in place.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from ..version import __version__
from ..errors import ConversionError
from ..gguf_header import read_header
from ..presets import PRESETS, Preset, raw_chat_template
from .convert.hub import DEFAULT_SOURCE
from .quantize import DEFAULT_QUANTS, quantize
from .store import Build, ModelStore, model_name

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

DEFAULT_DOWNLOAD = "~13.5 GB"
"""zai-org/BPO's (formerly THUDM/BPO) safetensors (Llama-2-7B in F16), what a first build downloads."""

_FULL_PRECISION = {"ALL_F32": "f32", "MOSTLY_F16": "f16", "MOSTLY_BF16": "bf16"}


@dataclass(frozen=True)
class ConvertPlan:
    """What one convert run builds. ``source``: Hub id, checkpoint folder, or an F32/F16/BF16 GGUF."""

    source: str = DEFAULT_SOURCE
    revision: str | None = None
    quants: tuple[str, ...] = DEFAULT_QUANTS
    outtype: str = "f16"
    keep_f16: bool = False
    """Keep the full-precision intermediate as a build of its own (``<model>:f16``)."""
    verify: bool = True
    preset: str | None = None
    """The preset the build runs by default (written into it); None: the source's, else BPO's stable mode."""
    name: str | None = None
    """Store model name; default: the source's last path part, lowercased."""
    eval_data: Path | None = None
    threads: int | None = None
    gpu_layers: int | None = None


@dataclass(frozen=True)
class _Source:
    gguf: Path
    outtype: str
    model: str
    repo: str | None
    revision: str | None
    owned: bool
    """The GGUF is ours (in the scratch folder) rather than the user's file."""


SOURCE_PRESETS = {"zai-org/BPO": "stable", "THUDM/BPO": "stable", "PKU-Baichuan-MLSystemLab/PAS-7B": "pas",
                  "zixiaozhu/MePO": "mepo"}
"""The preset a build of these Hub repos runs unless told otherwise."""


def build_preset(name: str | None, repo: str | None) -> Preset:
    """The preset a build runs: ``name`` (built-in or the user's TOML), else the source repo's, else stable."""
    from ..preset_files import find_preset

    return find_preset(name or SOURCE_PRESETS.get(repo or "", "stable"), {})


def preset_metadata(preset: Preset) -> dict[str, object]:
    """The build's presets as GGUF keys (``bpo.stable.temperature``, ..., ``bpo.preset.default``): BPO's
    two modes for a BPO build, else ``preset`` alone."""
    from ..preset_files import gguf_metadata

    presets = PRESETS.values() if PRESETS.get(preset.name) == preset else [preset]
    return gguf_metadata(presets, preset.name)


def chat_template(preset: Preset) -> str | None:
    """The chat template the build carries: a raw preset's as Jinja; None keeps the checkpoint's own
    (a chat preset wraps prompts in it)."""
    return raw_chat_template(preset) if preset.wrap == "raw" else None


def convert(plan: ConvertPlan, store: ModelStore, *, progress: Progress | None = None) -> list[Build]:
    """Run ``plan``; returns the builds added to ``store``: the quantized ones in the order of
    ``plan.quants``, then the kept full-precision one. The reference logits for verification are
    computed once, on the first quantized build, and shared by the others."""
    from .verify import Reference, compare, load_pairs

    pairs = load_pairs(plan.eval_data) if plan.verify else []
    bars = Bars(progress)
    builds: list[Build] = []
    with store.workspace() as work:
        source = _prepare(plan, work, bars)
        reference: Reference | None = None
        for quant in plan.quants:
            if quant == source.outtype:
                continue  # the intermediate itself, kept below
            out = work / f"{source.model}-{quant}.gguf"
            quantize(source.gguf, out, quant, threads=plan.threads, on_tensor=bars.tensors(f"quantize {quant}"))
            verification = None
            if pairs:
                if reference is None:
                    (work / "reference").mkdir()
                    reference = Reference.compute(
                        source.gguf, pairs, work / "reference", name=f"{source.model}:{source.outtype}",
                        threads=plan.threads, gpu_layers=plan.gpu_layers, on_progress=bars.steps("reference"))
                result = compare(out, reference, threads=plan.threads, gpu_layers=plan.gpu_layers,
                                 on_progress=bars.steps(f"verify {quant}"))
                verification = result.to_dict()
            builds.append(_add(store, out, source, quant, verification))
        if plan.keep_f16 or source.outtype in plan.quants:
            kept = source.gguf if source.owned else _copy(source.gguf, work)
            builds.append(_add(store, kept, source, source.outtype, None))
    return builds


def tool_versions() -> dict[str, str]:
    """What built a build, for its manifest."""
    versions = {"bpo_local": __version__}
    for dist in ("llama-cpp-python", "gguf"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions


def _prepare(plan: ConvertPlan, work: Path, bars: Bars) -> _Source:
    """The full-precision GGUF to quantize from: the user's own GGUF, or a checkpoint converted."""
    given = Path(plan.source).expanduser()
    if given.is_file() and given.suffix.lower() == ".gguf":
        return _from_gguf(given, plan)
    from .convert import convert_checkpoint, fetch_source

    checkout = fetch_source(plan.source, revision=plan.revision, progress=bars.labelled())
    model = plan.name or model_name(checkout.repo_id or str(checkout.path))
    out = work / f"{model}-{plan.outtype}.gguf"
    preset = build_preset(plan.preset, checkout.repo_id)
    metadata = {**_source_metadata(checkout.repo_id, checkout.revision), **preset_metadata(preset)}
    on_tensor = bars.tensors("convert")
    convert_checkpoint(checkout.path, out, outtype=plan.outtype, name=model, chat_template=chat_template(preset),
                       extra_metadata=metadata, on_tensor=lambda name, i, total: on_tensor(name, i + 1, total))
    repo = checkout.repo_id or str(checkout.path)
    return _Source(out, plan.outtype, model, repo, checkout.revision, owned=True)


def _from_gguf(path: Path, plan: ConvertPlan) -> _Source:
    from gguf import LlamaFileType

    try:
        meta = read_header(path).metadata
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path} is not a readable GGUF ({exc}); pass an F16 GGUF or a checkpoint") from exc
    file_type = meta.get("general.file_type")
    kind = LlamaFileType(file_type).name if isinstance(file_type, int) else "unknown type"
    if kind not in _FULL_PRECISION:
        raise ConversionError(f"{path.name} is already quantized ({kind}); convert needs an F32/F16/BF16 GGUF "
                              "or the original checkpoint")
    repo, revision = meta.get("general.source.repository"), meta.get("general.source.revision")
    return _Source(path, _FULL_PRECISION[kind], plan.name or model_name(path.stem),
                   str(repo) if repo else str(path.resolve()), str(revision) if revision else None, owned=False)


def _source_metadata(repo: str | None, revision: str | None) -> dict[str, object]:
    if repo is None:
        return {}
    meta: dict[str, object] = {"general.source.repository": repo,
                               "general.source.repo_url": f"https://huggingface.co/{repo}"}
    if revision:
        meta["general.source.revision"] = revision
    return meta


def _add(store: ModelStore, gguf: Path, source: _Source, quant: str, verification: dict | None) -> Build:
    with store.lock(source.model, quant):
        return store.add(gguf, model=source.model, quant=quant, source_repo=source.repo,
                         source_revision=source.revision, tool=tool_versions(), verification=verification)


def _copy(path: Path, work: Path) -> Path:
    target = work / path.name
    shutil.copyfile(path, target)
    return target


class Bars:
    """Progress callbacks that draw on a rich Progress, or do nothing without one. A stage's bar appears
    when its callback is made, so its clock starts with the stage."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def update(self, label: str, done: int, total: int | None) -> None:
        if self.progress is None:
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)

    def labelled(self) -> Callable[[str, int, int], None] | None:
        return self.update if self.progress else None

    def steps(self, label: str) -> Callable[[int, int], None]:
        self.update(label, 0, None)
        return lambda done, total: self.update(label, done, total)

    def tensors(self, label: str) -> Callable[[str, int, int], None]:
        self.update(label, 0, None)
        return lambda name, done, total: self.update(label, done, total)
