"""``bpo-local eval``: pairs judged per minute with every stage concurrent (``--parallel N``) vs one request at a
time (``--parallel 1``), in one run, as users run it (the CLI in a subprocess).

    python benchmarks/bench_eval.py [--pairs 8] [--parallel 4] [--max-tokens 48] [--threads 2] [--model GGUF]

(a) a llama-server with N slots as BPO, target and judge (target: >= 3x); (b) the local engine, the GGUF as BPO,
target and judge (target: >= 1.5x; SmolLM2 by default, or the 7B shape from make_7b_checkpoint.py). BPO's
rewrites are made once beforehand and read from the cache by every timed run, so the figures are the answer and
judge stages: the seconds each stage's progress line reports, summed; pairs / those seconds * 60.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _llama_server import LlamaServer  # noqa: E402
from conftest import _fetch_smollm2  # noqa: E402

STAGE = re.compile(r"^(answer|judge): .* in (\d+\.\d) s", re.MULTILINE)


def eval_cli(args: list[str], out: Path) -> float:
    """Run ``bpo-local eval ARGS --out OUT``; the seconds its answer and judge stages took."""
    proc = subprocess.run([sys.executable, "-m", "bpo_local", "eval", *args, "--out", str(out), "--json"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"eval failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return sum(float(seconds) for _, seconds in STAGE.findall(proc.stderr))


def compare(name: str, args: list[str], pairs: int, parallel: int, work: Path) -> float:
    """One at a time vs ``parallel`` in flight from the same rewrites; prints both rates, returns the ratio."""
    warm = work / f"{name}-rewrites"
    eval_cli([*args, "--parallel", str(parallel)], warm)  # BPO's rewrites (and a warm page cache)
    rates = {}
    for label, k in (("one at a time", 1), (f"--parallel {parallel}", parallel)):
        out = work / f"{name}-{k}"
        (out / "cache").mkdir(parents=True)
        shutil.copy(warm / "cache" / "optimize.jsonl", out / "cache" / "optimize.jsonl")
        seconds = eval_cli([*args, "--parallel", str(k)], out)
        rates[label] = pairs / seconds * 60
        print(f"{name:14s} {label:14s} {seconds:7.1f} s  {rates[label]:7.1f} pairs judged/min", flush=True)
    ratio = rates[f"--parallel {parallel}"] / rates["one at a time"]
    print(f"{name:14s} concurrent / one at a time: {ratio:.2f}x", flush=True)
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48, help="answer and judgment length cap")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, help="GGUF (default: the test suite's SmolLM2)")
    ap.add_argument("--only", choices=("server", "local"))
    args = ap.parse_args()
    gguf = args.model or _fetch_smollm2()
    common = ["--limit", str(args.pairs), "--max-tokens", str(args.max_tokens), "--judge-max-tokens",
              str(args.max_tokens), "--bpo-max-tokens", str(args.max_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "server"):
            with LlamaServer.start(gguf, slots=args.parallel, threads=args.threads, ctx=4096 * args.parallel) as server:
                compare("llama-server", ["--server", server.url, "--target", server.url, "--judge", server.url,
                                         *common], args.pairs, args.parallel, work)
        if args.only in (None, "local"):
            local = ["--model", str(gguf), "--target", str(gguf), "--judge", str(gguf), "--threads",
                     str(args.threads)]
            compare("local engine", [*local, *common], args.pairs, args.parallel, work)


if __name__ == "__main__":
    main()
