"""Dataset throughput: local engine vs one llama-server vs two (1 thread each), and our client vs the
same requests sent with plain httpx (the bare server). Prints medians and ratios from one run.

    python benchmarks/bench_remote.py [--prompts 16] [--max-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _llama_server import LlamaServer  # noqa: E402
from conftest import _fetch_smollm2  # noqa: E402

import bpo_local  # noqa: E402
from bpo_local.backends.remote.llama_server import completion_body  # noqa: E402
from bpo_local.open import connect  # noqa: E402


def timed(run) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prompts = [f"write a short story about a robot number {i}" for i in range(args.prompts)]
    kw = {"temperature": 0, "max_tokens": args.max_tokens, "seed": 1}
    gguf = _fetch_smollm2()
    results: dict[str, list[float]] = {}
    with bpo_local.load(gguf, threads=1, ctx=2048) as local:
        results["local engine"] = [timed(lambda: list(local.optimize_many(prompts, parallel=2, **kw)))
                                   for _ in range(args.repeats)]
    with LlamaServer.start(gguf, slots=2) as a, LlamaServer.start(gguf, slots=2) as b:
        with connect([a.url]) as one:
            requests = [one.request_for(p, one.preset("stable", **{k: v for k, v in kw.items() if k != "seed"}), 1)
                        for p in prompts]
            bodies = [{**completion_body(r, r.prompt, seed=1, n_predict=args.max_tokens, hold_stops=False),
                       "stream": False} for r in requests]
            with httpx.Client(timeout=600) as client, ThreadPoolExecutor(2) as pool:
                results["bare llama-server x1"] = [
                    timed(lambda: list(pool.map(lambda body: client.post(f"{a.url}/completion", json=body), bodies)))
                    for _ in range(args.repeats)]
            results["client llama-server x1"] = [timed(lambda: list(one.optimize_many(prompts, parallel=2, **kw)))
                                                 for _ in range(args.repeats)]
        with connect([a.url, b.url]) as two:
            results["client llama-server x2"] = [timed(lambda: list(two.optimize_many(prompts, parallel=2, **kw)))
                                                 for _ in range(args.repeats)]
    med = {k: statistics.median(v) for k, v in results.items()}
    for name, seconds in med.items():
        print(f"{name:24s} {seconds:7.2f} s  {args.prompts / seconds:6.2f} prompts/s")
    print(f"client / bare (x1)       {med['bare llama-server x1'] / med['client llama-server x1']:.3f}x throughput")
    print(f"two / one server         {med['client llama-server x1'] / med['client llama-server x2']:.3f}x throughput")
    print(f"one server / local       {med['local engine'] / med['client llama-server x1']:.3f}x throughput")


if __name__ == "__main__":
    main()
