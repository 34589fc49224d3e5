#!/usr/bin/env python3
"""Benchmark our converter against llama.cpp's own convert_hf_to_gguf.py on the same checkpoint.

Generates a random fp16 safetensors Llama (hidden 1024, 8 layers, Llama-2 tokenizer; ~330 MB),
fetches llama.cpp's converter from the llama-cpp-python sdist of the installed version (never
committed), runs both as subprocesses for F16 and F32, and reports wall time, peak RSS
(``wait4`` ru_maxrss) and output equivalence (tensor bytes, vocabulary, special ids).

    python benchmarks/bench_convert.py [--workdir DIR] [--repeat N]
    python benchmarks/bench_convert.py --bin --torch-python /tmp/torchvenv/bin/python

``--bin`` re-saves the same weights as PyTorch ``.bin`` shards (torch.save's zip layout, written
without torch) and compares the F16 conversion of those; llama.cpp's converter needs torch for
them, taken from the Python given by ``--torch-python`` (ours never imports it).

``--7b [warm|cold]`` instead converts a Llama-2-7B-shaped fp16 checkpoint (13.5 GB; see
make_7b_checkpoint.py) to F16, runs interleaved, and reports medians; before each run the
checkpoint is read into the page cache (warm) or evicted from it (cold) and the disk synced.
It reuses DIR/checkpoint-7b if present (``make_7b_checkpoint.py DIR/checkpoint-7b`` keeps one
between runs), else builds it and removes it at the end; it needs ~41 GB free in DIR.

Targets: time <= 1.0x llama.cpp's, peak RSS <= 0.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

import _torch_zip as torch_zip  # noqa: E402
from _checkpoints import llama2_tokenizer_files, llama_config, save_safetensors, write_json  # noqa: E402
from _convert_helpers import llama_cpp_converter  # noqa: E402
from gguf_compare import differences  # noqa: E402
from make_7b_checkpoint import build_7b_checkpoint  # noqa: E402

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 1024, 8, 16, 8, 2816, 32000
TOKENIZER = REPO.parent / "shared" / "fixtures" / "llama2-tokenizer.model"


def build_checkpoint(folder: Path) -> Path:
    """A random fp16 Llama checkpoint in 2 safetensors shards (built once, reused)."""
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    head_dim = HIDDEN // HEADS

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
                   p + "self_attn.q_proj.weight": (HEADS * head_dim, HIDDEN),
                   p + "self_attn.k_proj.weight": (KV_HEADS * head_dim, HIDDEN),
                   p + "self_attn.v_proj.weight": (KV_HEADS * head_dim, HIDDEN),
                   p + "self_attn.o_proj.weight": (HIDDEN, HEADS * head_dim),
                   p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                   p + "mlp.down_proj.weight": (HIDDEN, FFN)}
    shapes |= {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    names = list(shapes)
    halves = (names[: len(names) // 2], names[len(names) // 2:])
    weight_map = {}
    for i, part in enumerate(halves):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_safetensors(tmp / file, {n: w(*shapes[n]) for n in part}, "f16")
        weight_map |= dict.fromkeys(part, file)
    write_json(tmp, "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    config = llama_config(VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=KV_HEADS, intermediate_size=FFN, max_position_embeddings=4096)
    write_json(tmp, "config.json", config)
    write_json(tmp, "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    llama2_tokenizer_files(tmp, TOKENIZER, pad=False)
    tmp.rename(folder)
    return folder


def build_bin_checkpoint(folder: Path, source: Path) -> Path:
    """The safetensors checkpoint ``source`` re-saved as fp16 PyTorch .bin shards (built once, reused)."""
    from safetensors.numpy import load_file

    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weight_map = {}
    for shard in sorted(source.glob("model-*.safetensors")):
        file = shard.name.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        weights = load_file(shard)
        torch_zip.save(tmp / file, {k: torch_zip.tensor(v, "HalfStorage") for k, v in weights.items()})
        weight_map |= dict.fromkeys(weights, file)
    write_json(tmp, "pytorch_model.bin.index.json", {"metadata": {}, "weight_map": weight_map})
    for other in source.iterdir():
        if not other.name.startswith("model"):
            shutil.copy(other, tmp)
    tmp.rename(folder)
    return folder


def bench_bin(workdir: Path, source: Path, theirs: tuple[Path, dict[str, str]], torch_python: str,
              repeat: int) -> int:
    """``--bin``: F16 conversion of the .bin checkpoint, ours (no torch) against llama.cpp's (torch)."""
    checkpoint = build_bin_checkpoint(workdir / "checkpoint-bin", source)
    size = sum(f.stat().st_size for f in checkpoint.glob("*.bin"))
    torch_site = subprocess.run([torch_python, "-c", "import os, torch; print(os.path.dirname(os.path.dirname("
                                 "torch.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    script, env = theirs
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    cmds = {"ours": ([sys.executable, str(REPO / "scripts" / "convert_hf_to_gguf.py"), str(checkpoint), "--outfile",
                      str(out / "ours-bin-f16.gguf"), "--outtype", "f16"], {}),
            "llama.cpp": ([sys.executable, str(script), str(checkpoint), "--outfile", str(out / "theirs-bin-f16.gguf"),
                           "--outtype", "f16"], {"PYTHONPATH": env["PYTHONPATH"] + os.pathsep + torch_site})}
    print(f"checkpoint: {checkpoint} ({size / 1e6:.0f} MB fp16 PyTorch .bin); llama.cpp's converter gets torch from "
          f"{torch_site}")
    walls: dict[str, list[float]] = {tool: [] for tool in cmds}
    rss: dict[str, int] = dict.fromkeys(cmds, 0)
    for _ in range(repeat):
        for tool, (cmd, cmd_env) in cmds.items():
            print("$", " ".join(cmd), flush=True)
            wall, peak, _ = run(cmd, cmd_env)
            walls[tool].append(wall)
            rss[tool] = max(rss[tool], peak)
    diff = differences(out / "ours-bin-f16.gguf", out / "theirs-bin-f16.gguf")
    (t_ours, t_theirs) = (float(np.median(walls[t])) for t in cmds)
    ok = rss["ours"] <= 0.5 * rss["llama.cpp"] and not diff
    print(f"\n.bin f16, median of {repeat}: ours {t_ours:.2f} s, llama.cpp {t_theirs:.2f} s ({t_ours / t_theirs:.2f}x); "
          f"peak RSS ours {rss['ours'] / 1e6:.0f} MB, llama.cpp {rss['llama.cpp'] / 1e6:.0f} MB "
          f"({rss['ours'] / rss['llama.cpp']:.2f}x); output {'identical' if not diff else '; '.join(diff[:3])}")
    print(f"target (RSS <= 0.5x, identical output): {'met' if ok else 'NOT met'}")
    print(json.dumps({"bin_f16": {"ours_s": round(t_ours, 3), "theirs_s": round(t_theirs, 3), "ours_rss": rss["ours"],
                                  "theirs_rss": rss["llama.cpp"], "identical": not diff}}))
    return 0 if ok else 1


_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and last line on stderr of one subprocess; fails loudly if it fails.

    A small Python process starts the command and reads its ``wait4`` usage: a child forked from
    this (large) process would inherit our resident size into its ru_maxrss.
    """
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env={**os.environ, **env},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    code, rss = done.stdout.split()
    if done.returncode != 0 or code != "0":
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return wall, int(rss), (done.stderr.strip().splitlines() or [""])[-1]


def bench_7b(workdir: Path, repeat: int, *, cold: bool) -> int:
    """F16 conversion of the 7B-shaped checkpoint, ours vs llama.cpp's, interleaved; medians and ratios."""
    checkpoint = workdir / "checkpoint-7b"
    built = not (checkpoint / "config.json").is_file()
    build_7b_checkpoint(checkpoint)
    shards = sorted(checkpoint.glob("*.safetensors"))
    theirs_script, theirs_env = llama_cpp_converter(workdir)
    out = workdir / "out-7b"
    out.mkdir(exist_ok=True)
    cmds = {
        "ours": ([sys.executable, str(REPO / "scripts" / "convert_hf_to_gguf.py"), str(checkpoint),
                  "--outfile", str(out / "ours.gguf"), "--outtype", "f16"], {}),
        "llama.cpp": ([sys.executable, str(theirs_script), str(checkpoint), "--outfile", str(out / "theirs.gguf"),
                       "--outtype", "f16"], theirs_env),
    }
    print(f"checkpoint: {checkpoint} ({sum(f.stat().st_size for f in shards) / 1e9:.1f} GB fp16, "
          f"{len(shards)} shards), page cache {'cold' if cold else 'warm'}")
    walls: dict[str, list[float]] = {tool: [] for tool in cmds}
    peaks: dict[str, list[int]] = {tool: [] for tool in cmds}
    diff: list[str] = []
    try:
        for i in range(repeat):
            for tool in list(cmds)[:: 1 if i % 2 == 0 else -1]:  # alternate who goes first
                _settle_page_cache(shards, cold)
                print("$", " ".join(cmds[tool][0]), flush=True)
                wall, rss, said = run(*cmds[tool])
                walls[tool].append(wall)
                peaks[tool].append(rss)
                print(f"  {wall:.1f} s, peak RSS {rss / 1e6:.0f} MB", flush=True)
                if tool == "ours":
                    print(f"  {said}", flush=True)  # "wrote ... written with O_DIRECT (why)" or the page cache's why
            if i == 0:
                diff = differences(out / "ours.gguf", out / "theirs.gguf")
            for file in out.glob("*.gguf"):
                file.unlink()
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if built:
            shutil.rmtree(checkpoint, ignore_errors=True)
    t_ours, t_theirs = (statistics.median(walls[t]) for t in cmds)
    r_ours, r_theirs = (statistics.median(peaks[t]) for t in cmds)
    ok = t_ours <= t_theirs and r_ours <= 0.5 * r_theirs and not diff
    print(f"\nmedians of {repeat}: ours {t_ours:.1f} s, {r_ours / 1e6:.0f} MB; llama.cpp {t_theirs:.1f} s, "
          f"{r_theirs / 1e6:.0f} MB; time x {t_ours / t_theirs:.2f}, RSS x {r_ours / r_theirs:.2f}; output "
          f"{'identical' if not diff else '; '.join(diff[:3])}")
    print(f"targets (time <= 1.0x, RSS <= 0.5x, identical output): {'met' if ok else 'NOT met'}")
    print(json.dumps({"cache": "cold" if cold else "warm", "ours_s": walls["ours"], "theirs_s": walls["llama.cpp"],
                      "ours_rss": peaks["ours"], "theirs_rss": peaks["llama.cpp"], "identical": not diff}))
    return 0 if ok else 1


def _settle_page_cache(files: list[Path], cold: bool) -> None:
    """Sync the disk (no one's write-back left to pay for), then read ``files`` into the page cache or drop them."""
    os.sync()
    for file in files:
        with open(file, "rb", buffering=0) as f:
            if cold:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while f.read(64 * 1024 * 1024):
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bpo-bench-convert"))
    parser.add_argument("--bin", action="store_true", help="benchmark a PyTorch .bin checkpoint instead")
    parser.add_argument("--torch-python", default="python3", help="a Python with torch, for llama.cpp's .bin path")
    parser.add_argument("--repeat", type=int, default=2, help="runs per tool and type; the best time is kept")
    parser.add_argument("--7b", dest="cache_7b", nargs="?", const="warm", choices=("warm", "cold"),
                        help="convert the 7B-shaped checkpoint, page cache warm (default) or cold")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.cache_7b:
        return bench_7b(args.workdir, args.repeat, cold=args.cache_7b == "cold")

    checkpoint = build_checkpoint(args.workdir / "checkpoint")
    size = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    theirs_script, theirs_env = llama_cpp_converter(args.workdir)
    if args.bin:
        return bench_bin(args.workdir, checkpoint, (theirs_script, theirs_env), args.torch_python, args.repeat)
    out = args.workdir / "out"
    out.mkdir(exist_ok=True)
    ours_script = REPO / "scripts" / "convert_hf_to_gguf.py"
    print(f"checkpoint: {checkpoint} ({size / 1e6:.0f} MB fp16 safetensors, hidden {HIDDEN}, {LAYERS} layers)")
    print(f"llama.cpp converter: {theirs_script}")

    rows, ok = [], True
    for outtype in ("f16", "f32"):
        cmds = {
            "ours": ([sys.executable, str(ours_script), str(checkpoint), "--outfile", str(out / f"ours-{outtype}.gguf"),
                      "--outtype", outtype], {}),
            "llama.cpp": ([sys.executable, str(theirs_script), str(checkpoint), "--outfile",
                           str(out / f"theirs-{outtype}.gguf"), "--outtype", outtype], theirs_env),
        }
        results: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for tool, (cmd, env) in cmds.items():
                print("$", " ".join(cmd), flush=True)
                wall, rss, _ = run(cmd, env)
                best = results.get(tool)
                results[tool] = (min(wall, best[0]) if best else wall, max(rss, best[1]) if best else rss)
        diff = differences(out / f"ours-{outtype}.gguf", out / f"theirs-{outtype}.gguf")
        (t_ours, r_ours), (t_theirs, r_theirs) = results["ours"], results["llama.cpp"]
        rows.append((outtype, t_ours, t_theirs, r_ours, r_theirs, diff))
        ok &= t_ours <= t_theirs and r_ours <= 0.5 * r_theirs and not diff

    print()
    print(f"{'type':<5} {'ours s':>8} {'llama.cpp s':>12} {'time x':>7} {'ours RSS MB':>12} {'llama.cpp RSS MB':>17} "
          f"{'RSS x':>6}  output")
    for outtype, t_ours, t_theirs, r_ours, r_theirs, diff in rows:
        print(f"{outtype:<5} {t_ours:8.2f} {t_theirs:12.2f} {t_ours / t_theirs:7.2f} {r_ours / 1e6:12.0f} "
              f"{r_theirs / 1e6:17.0f} {r_ours / r_theirs:6.2f}  {'identical' if not diff else '; '.join(diff[:3])}")
    print(f"\ntargets (time <= 1.0x, RSS <= 0.5x, identical output): {'met' if ok else 'NOT met'}")
    print(json.dumps({"rows": [{"outtype": r[0], "ours_s": round(r[1], 3), "theirs_s": round(r[2], 3),
                                "ours_rss": r[3], "theirs_rss": r[4], "identical": not r[5]} for r in rows]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
