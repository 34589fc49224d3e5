"""`bpo-local serve` under load: concurrent clients against one after another, and the proxy's overhead.

Usage:
    python benchmarks/bench_serve.py                 # ~3 min on SmolLM2-135M, 2 cores
    python benchmarks/bench_serve.py --clients 16 --max-tokens 128 --threads 2
    python benchmarks/bench_serve.py --model BPO-7B.Q4_K_M.gguf --max-tokens 128 --rounds 3 --skip-proxy

1. Throughput: the same 16 prompts (seeded sampling, temperature 1, up to --max-tokens new tokens, so
   decoding dominates) sent to /v1/optimize one after another, then by 16 clients at once; reported:
   generated tokens/s and requests/s of each, their ratio (targets: >= 1.5x on SmolLM2, >= 2x on the
   7B-shaped Q4_K_M), p50/p99 latency.
2. Owner overhead: /v1/optimize wall time minus the engine's own total_seconds (queue hand-off,
   parsing, JSON), median over sequential requests.
3. Proxy overhead: the same chat request to llama-server directly and through `serve --upstream` with
   X-BPO-Mode: off (BPO's generation time is then zero), taking turns; median difference (target <= 20 ms).
No asserts: numbers on a shared machine are noisy; compare runs on an idle one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _llama_server import LlamaServer  # noqa: E402
from _serve_helpers import BpoServer  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache" / "bpo-local-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TOPICS = ("bread", "taxes", "a bike", "a poem", "sleep", "python", "rust", "a garden", "chess", "coffee", "a cv",
          "a speech", "running", "piano", "a budget", "painting")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def throughput(url: str, clients: int, max_tokens: int) -> None:
    bodies = [{"prompt": f"help me with {TOPICS[i % len(TOPICS)]}", "max_tokens": max_tokens, "temperature": 1.0,
               "seed": i} for i in range(clients)]
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(body: dict) -> tuple[float, int]:
            start = time.perf_counter()
            reply = (await client.post(f"{url}/v1/optimize", json=body)).json()
            return time.perf_counter() - start, reply["timings"]["generated_tokens"]

        await one(bodies[0])  # warm-up
        rows = {}
        for name in ("sequential", "concurrent"):
            start = time.perf_counter()
            if name == "sequential":
                results = [await one(b) for b in bodies]
            else:
                results = await asyncio.gather(*(one(b) for b in bodies))
            wall = time.perf_counter() - start
            latencies = [r[0] for r in results]
            tokens = sum(r[1] for r in results)
            rows[name] = tokens / wall
            print(f"{name:>10}: {clients} requests in {wall:6.2f} s, {tokens} tokens, {tokens / wall:7.1f} tok/s, "
                  f"{clients / wall:5.2f} req/s, latency p50 {percentile(latencies, 0.5):.2f} s "
                  f"p99 {percentile(latencies, 0.99):.2f} s")
        print(f"concurrent / sequential throughput: {rows['concurrent'] / rows['sequential']:.2f}x "
              "(targets: >= 1.5x on SmolLM2, >= 2x on the 7B-shaped Q4_K_M)")


def owner_overhead(url: str, rounds: int) -> None:
    gaps = []
    with httpx.Client(timeout=120) as client:
        for i in range(rounds):
            start = time.perf_counter()
            reply = client.post(f"{url}/v1/optimize", json={"prompt": "hi", "max_tokens": 4, "seed": i}).json()
            gaps.append(time.perf_counter() - start - reply["timings"]["total_seconds"])
    print(f"owner overhead (wall - engine time) on /v1/optimize: median {statistics.median(gaps) * 1000:.2f} ms "
          f"over {rounds}")


def proxy_overhead(direct: str, proxied: str, rounds: int) -> None:
    body = {"model": "target", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4,
            "temperature": 0, "seed": 0}
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    with httpx.Client(timeout=120) as client:
        for _ in range(rounds):
            for name, url, headers in (("direct", direct, {}), ("proxy", proxied, {"X-BPO-Mode": "off"})):
                start = time.perf_counter()
                client.post(f"{url}/chat/completions", json=body, headers=headers).raise_for_status()
                times[name].append(time.perf_counter() - start)
    d, p = statistics.median(times["direct"]), statistics.median(times["proxy"])
    print(f"proxy: direct median {d * 1000:.1f} ms, through serve {p * 1000:.1f} ms, "
          f"overhead {(p - d) * 1000:.1f} ms over {rounds} (target <= 20 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--skip-proxy", action="store_true", help="leave out part 3 (it loads the model twice more)")
    args = parser.parse_args()
    home = Path("/tmp") / f"bench-serve-{time.monotonic_ns()}"
    ctx = str(max(2048, args.clients * (args.max_tokens + 64)))
    with BpoServer.start(args.model, "--threads", str(args.threads), "--ctx", ctx, "--parallel", str(args.clients),
                         "--no-log", home=home / "bpo") as server:
        print(f"model {args.model.name}, {args.threads} threads, ctx {ctx}, {args.clients} clients, "
              f"max {args.max_tokens} new tokens")
        asyncio.run(throughput(server.url, args.clients, args.max_tokens))
        owner_overhead(server.url, args.rounds)
    if args.skip_proxy:
        return
    with LlamaServer.start(args.model, slots=1, threads=1) as upstream, \
            BpoServer.start(args.model, "--ctx", "512", "--no-log", "--upstream", f"{upstream.url}/v1",
                            home=home / "proxy") as proxy:
        proxy_overhead(f"{upstream.url}/v1", proxy.base_url, args.rounds)


if __name__ == "__main__":
    main()
