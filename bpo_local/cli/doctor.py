"""`bpo-local doctor`: versions, llama.cpp build and devices, paths, and the model optimize would use."""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import BpoLocalError
from ..version import __version__
from .advice import describe
from .common import add_model_options, given, load_optimizer

if TYPE_CHECKING:
    from ..optimizer import Optimizer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the installation, llama.cpp, paths and the model",
        description="Report versions, llama.cpp's build and devices, where files live, and the model "
                    "`optimize` would load. Exit code 1 when a configured model cannot be used.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_model_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    llama = _llama_cpp(args)
    report = {"versions": _versions(llama), "llama.cpp": llama, "paths": _paths(), "model": _model(args)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print(report)
    return 1 if "error" in llama or "error" in report["model"] else 0


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _versions(llama: dict[str, Any]) -> dict[str, str]:
    return {
        "bpo-local": __version__,
        "llama-cpp-python": _version("llama-cpp-python"),
        "llama.cpp": llama.get("version", "unknown"),
        "gguf": _version("gguf"),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _llama_cpp(args: argparse.Namespace) -> dict[str, Any]:
    """llama.cpp's build, devices and CPU weight buffers, or ``{"error": why}`` when its library cannot load."""
    from ..backends.llamacpp import buffers
    from ..backends.llamacpp.system import system_info
    from ..config import load_config

    try:
        info = system_info()
        choice = buffers.choose(args.cpu_buffers or load_config().cpu_buffers or "auto")
    except (ImportError, OSError) as exc:
        return {"error": f"llama-cpp-python cannot load ({exc}); reinstall it: pip install --force-reinstall llama-cpp-python"}
    return {
        "version": info.llama_cpp,
        "gpu_offload": info.gpu_offload,
        "devices": [asdict(d) for d in info.devices],
        "physical_cores": info.physical_cores,
        "features": info.features.strip(" |"),
        "cpu_buffers": {"policy": choice.policy, "used": list(choice.offered), "left_out": list(choice.excluded),
                        "why": list(choice.reasons)},
    }


def _paths() -> dict[str, str]:
    from ..config import config_path, data_dir, models_dir, rewrite_store_path, state_dir
    from ..runlog import default_path

    return {
        "config": str(config_path()),
        "data": str(data_dir()),
        "models": str(models_dir()),
        "state": str(state_dir()),
        "run_log": str(default_path()),
        "rewrite_store": str(rewrite_store_path()),
    }


def _model(args: argparse.Namespace) -> dict[str, Any]:
    """The model optimize would load: its facts, ``{"none": why}`` when none is set up, or ``{"error": why}``."""
    from ..errors import NoModel
    from ..presets import CHAT_TEMPLATE_JINJA
    from .common import choose_or_build

    try:
        choice = choose_or_build(args)
    except NoModel as exc:
        return {"none": describe(exc)}
    except BpoLocalError as exc:
        return {"error": describe(exc)}
    if isinstance(choice, tuple):
        return _servers(choice, args)
    try:
        with load_optimizer(args, choice) as opt:
            info = opt.info
            threads = opt.optimize(THREADS_PROBE, seed=0, max_tokens=THREADS_PROBE_TOKENS).timings.threads
    except BpoLocalError as exc:
        return {"error": describe(exc)}
    template = info.chat_template
    return {
        "path": str(info.path),
        "name": info.title,
        "architecture": info.architecture,
        "parameters": info.n_params,
        "quant": info.file_type,
        "size_bytes": info.size_bytes,
        "context_train": info.n_ctx_train,
        "context": info.n_ctx,
        "layers": info.n_layer,
        "gpu_layers": info.gpu_layers,
        "backend": info.backend,
        "bpo_chat_template": template == CHAT_TEMPLATE_JINJA,
        "chat_template": "BPO's" if template == CHAT_TEMPLATE_JINJA else ("none" if template is None else "another"),
        "threads": {c.phase: {"threads": c.threads, "why": c.why} for c in threads},
    }


THREADS_PROBE = "Say hello."
THREADS_PROBE_TOKENS = 32
"""doctor optimizes this once so the engine's thread tuner measures the machine as it is now."""


BPO_PROBE = "[INST]"
BPO_PROBE_IDS = [1, 518, 25580, 29962]
"""BOS + "[INST]" in BPO's (Llama-2's) vocabulary: a server whose tokenizer gives these serves BPO's vocabulary."""


def _servers(urls: tuple[str, ...], args: argparse.Namespace) -> dict[str, Any]:
    """Each server's kind, version, model, context, slots, and whether BPO runs there exactly."""
    from ..open import open_optimizer
    from ..presets import AGGRESSIVE, CHAT_TEMPLATE_JINJA, STABLE

    servers = []
    for url in urls:
        try:
            opt = open_optimizer((url,), given(args))
        except BpoLocalError as exc:
            servers.append({"url": url, "error": describe(exc)})
            continue
        with opt:
            info, said = opt.info, opt.info.metadata
            servers.append({
                "url": said["url"], "kind": said["kind"], "version": said["version"], "model": info.title,
                "context": info.n_ctx, "slots": int(said["slots"]) if "slots" in said else None,
                "bpo_vocabulary": _bpo_vocabulary(opt),
                "bpo_chat_template": info.chat_template == CHAT_TEMPLATE_JINJA if info.chat_template else None,
                "modes": {p.name: _fidelity(opt, p.name) for p in (STABLE, AGGRESSIVE)}, "how": list(opt.backend.capabilities.notes),
            })
    failed = [s["error"] for s in servers if "error" in s]
    return {"servers": servers, **({"error": failed[0]} if failed else {})}


def _fidelity(opt: Optimizer, mode: str) -> str:
    """Whether ``mode`` runs there exactly, with the same candidates by other means, or not at all."""
    try:
        notes = opt.adaptations(mode)
    except BpoLocalError as exc:
        return f"cannot: {exc}"
    return "exact" if not notes else "same candidates (" + "; ".join(notes) + ")"


def _bpo_vocabulary(opt: Optimizer) -> bool:
    try:
        return opt.backend.tokenize(BPO_PROBE, add_bos=True, parse_special=False) == BPO_PROBE_IDS
    except BpoLocalError:
        return False


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    sections = {
        "versions": report["versions"],
        "llama.cpp": _llama_rows(report["llama.cpp"]),
        "paths": {k: v + ("" if k != "config" or os.path.isfile(v) else " (none)") for k, v in report["paths"].items()},
        "model": _model_rows(report["model"]),
    }
    for title, rows in sections.items():
        console.print(f"[bold]{title}[/bold]")
        width = max(map(len, rows))
        for key, value in rows.items():
            console.print(f"  {key:<{width}}  {escape(value)}")


def _llama_rows(llama: dict[str, Any]) -> dict[str, str]:
    if "error" in llama:
        return {"status": f"error: {llama['error']}"}
    devices = ", ".join(f"{d['backend']} ({d['kind']}: {d['description']})" for d in llama["devices"])
    return {
        "GPU offload": "supported" if llama["gpu_offload"] else "not in this build (CPU only)",
        "devices": devices or "none found",
        "physical cores": str(llama["physical_cores"]),
        "features": llama["features"],
        "CPU weight buffers": _buffer_row(llama["cpu_buffers"]),
    }


def _buffer_row(buffers: dict[str, Any]) -> str:
    used = ", ".join(buffers["used"]) or "plain CPU only"
    left_out = "; ".join(f"{name} left out: {why}" for name, why in zip(buffers["left_out"], buffers["why"]))
    return f"{used} (--cpu-buffers {buffers['policy']}" + (f"; {left_out})" if left_out else ")")


def _model_rows(model: dict[str, Any]) -> dict[str, str]:
    if "servers" in model:
        return _server_rows(model["servers"])
    if "none" in model:
        return {"status": model["none"]}
    if "error" in model:
        return {"status": f"error: {model['error']}"}
    return {
        "path": model["path"],
        "name": model["name"],
        "architecture": model["architecture"],
        "parameters": f"{model['parameters'] / 1e9:.2f} B" if model["parameters"] >= 1e9 else f"{model['parameters'] / 1e6:.0f} M",
        "quant": model["quant"],
        "size": f"{model['size_bytes'] / 2**30:.2f} GiB" if model["size_bytes"] >= 2**30 else f"{model['size_bytes'] / 2**20:.0f} MiB",
        "context": f"{model['context']} (trained {model['context_train']})",
        "offload": f"{model['gpu_layers']}/{model['layers']} layers on {model['backend']}",
        "chat template": {
            "BPO's": "BPO's (llama-server, LM Studio and Ollama will format prompts right)",
            "none": "none (other runtimes will not apply BPO's template)",
            "another": "not BPO's (other runtimes will format prompts differently)",
        }[model["chat_template"]],
        **{f"{phase} threads": f"{c['threads']} ({c['why']})" for phase, c in model["threads"].items()},
    }


def _server_rows(servers: list[dict[str, Any]]) -> dict[str, str]:
    rows: dict[str, str] = {}
    for s in servers:
        if "error" in s:
            rows[s["url"]] = f"error: {s['error']}"
            continue
        rows[s["url"]] = f"{s['kind']} {s['version']}, model {s['model']}, context {s['context']}" + \
            (f", {s['slots']} slots" if s["slots"] else "")
        rows[f"{s['url']} BPO vocabulary"] = "yes" if s["bpo_vocabulary"] else "no (this server does not serve BPO's Llama-2 model)"
        for mode, verdict in s["modes"].items():
            rows[f"{s['url']} {mode}"] = verdict
    return rows
