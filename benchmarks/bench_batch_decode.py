"""How much batched decoding gains on this machine: decode tokens/s with 1, 4 and 16 sequences at once
(``--widths``), in bpo-local's engine and in llama.cpp's own llama-server (the xllamacpp wheel), each
against its own rate at the first width. This is the ceiling of any "concurrent clients vs one after
another" ratio, such as bench_serve.py's, before prompt evaluation (which batching does not speed up
on a CPU) is counted.

    python benchmarks/bench_batch_decode.py                                            # SmolLM2, seconds
    python benchmarks/bench_batch_decode.py --model BPO-7B.Q4_K_M.gguf --widths 1,16   # ~4 min, 7B, 2 cores

Seeded sampling at temperature 1 with no stop (EOS ignored), the same 15-token prompt for every
sequence, decode time only (the engine's own timings; llama-server's ``predicted_per_second``).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _llama_server import LlamaServer  # noqa: E402

from bpo_local.backend import Request, Sampling  # noqa: E402
from bpo_local.backends.llamacpp import Engine  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache" / "bpo-local-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "[INST] hello there, tell me a story [/INST]"


def engine_rates(model: Path, threads: int, tokens: int, widths: list[int]) -> dict[int, float]:
    with Engine(str(model), n_ctx=max(widths) * (tokens + 32), n_threads=threads,
                n_seq_max=max(widths) + 1) as engine:
        prompt = tuple(engine.tokenize(PROMPT, add_bos=True))
        rates = {}
        for width in widths:
            t = engine.generate(Request(prompt, tokens, Sampling(temperature=1.0, seed=1), n=width)).run().timings
            rates[width] = t.generated_tokens / t.decode_seconds
        return rates


def server_rates(model: Path, threads: int, tokens: int, widths: list[int]) -> dict[int, float]:
    ctx = max(widths) * max(tokens + 32, 128)  # llama-server splits it over its slots
    with LlamaServer.start(model, slots=max(widths), threads=threads, ctx=ctx, timeout=600) as server, \
            httpx.Client(base_url=server.url, timeout=3600) as client:
        def one(seed: int) -> float:
            body = {"prompt": PROMPT, "n_predict": tokens, "temperature": 1.0, "seed": seed, "ignore_eos": True}
            return float(client.post("/completion", json=body).json()["timings"]["predicted_per_second"])

        rates = {}
        for width in widths:
            with ThreadPoolExecutor(width) as pool:
                rates[width] = sum(pool.map(one, range(width)))  # all decode together: per-sequence rates add up
        return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per sequence (default 24)")
    parser.add_argument("--widths", default="1,4,16", help="sequences at once, comma-separated; the first is the base")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"model {args.model.name}, {args.threads} threads, {args.tokens} new tokens per sequence")
    for name, measure in (("bpo-local engine", engine_rates), ("llama-server", server_rates)):
        rates = measure(args.model, args.threads, args.tokens, widths)
        cells = ", ".join(f"{w} seq {r:7.2f} tok/s ({r / rates[widths[0]]:.2f}x)" for w, r in rates.items())
        print(f"{name:17s} {cells}", flush=True)


if __name__ == "__main__":
    main()
