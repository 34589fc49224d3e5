"""Generation speed of bpo-local's Engine against llama-cpp-python and a bare llama.cpp decode loop.

Usage:
    python benchmarks/bench_generate.py            # ~6 min: 6 prompts, 128 new tokens, 2 rounds
    python benchmarks/bench_generate.py --quick    # ~1-2 min: 3 prompts, 48 new tokens
    python benchmarks/bench_generate.py --model path/to/bpo.Q4_K_M.gguf --threads 8

The same BPO-templated prompts (../shared/data/bpo_test.json), GGUF, thread count and greedy decoding
with no stop tokens go through:
  (a) ours   bpo_local.backends.llamacpp.Engine
  (b) lcp    llama-cpp-python's Llama.create_completion (EOS masked with logit_bias, as it always
             stops there otherwise; that bias runs as its Python logits processor)
  (c) bare   a plain llama.cpp loop through the C API (llama_decode + greedy sampler): the floor
Each runs in its own subprocess so its peak RSS is its own. Reported: median decode tokens/s and
time to first token over the prompts, peak RSS, and ratios against (c). Then aggressive-style
candidates: one Engine request with n=5 against 5 separate n=1 requests (seeded sampling, no stops,
equal lengths), and a decode ratio measured with ours and bare taking turns token by token in one
process, which machine drift cannot skew. Last, dataset throughput: 12 BPO prompts through
Optimizer.optimize_many (stable preset, seed 0, 64 new tokens at most) with --parallel 1 and 4,
in prompts/s. Targets: decode >= 0.97x bare; n=5 <= 0.75x the time of 5 x n=1. No asserts.
Timings on a shared machine are noisy: compare runs taken on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path.home() / ".cache" / "bpo-local-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bpo_test.json"
N_CTX = 2048
CANDIDATES = 5
DATASET_PROMPTS = 12
DATASET_MAX_TOKENS = 64
PARALLEL = (1, 4)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decode_stats(start: float, first: float, end: float, n_tokens: int) -> dict:
    return {"ttft": first - start, "tps": (n_tokens - 1) / (end - first) if n_tokens > 1 else 0.0,
            "tokens": n_tokens}


# workers: each runs in its own process and prints one JSON line


def run_ours(spec: dict) -> dict:
    from bpo_local.backend import Request, Sampling
    from bpo_local.backends.llamacpp import Engine

    engine = Engine(spec["model"], n_ctx=N_CTX, n_threads=spec["threads"])
    rows = []
    for prompt in spec["prompts"]:
        start = time.perf_counter()
        first = None
        n = 0
        generation = engine.generate(Request(tuple(prompt), spec["max_tokens"], Sampling(temperature=0)))
        for _ in generation:
            n += 1
            first = first or time.perf_counter()
        rows.append(_decode_stats(start, first, time.perf_counter(), n))
        rows[-1]["cached"] = generation.result.timings.cached_prompt_tokens
    return {"rows": rows}


def run_llama_cpp_python(spec: dict) -> dict:
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as lib

    from bpo_local.backends.llamacpp import buffers

    buffers.apply("auto", lib.llama_model_default_params())  # Llama() then loads without AMX weight buffers too
    llm = Llama(spec["model"], n_ctx=N_CTX, n_threads=spec["threads"], n_threads_batch=spec["threads"],
                verbose=False)
    rows = []
    for prompt in spec["prompts"]:
        llm.reset()  # no prefix reuse across prompts here: measure a cold prompt like bare
        start = time.perf_counter()
        first = None
        n = 0
        for chunk in llm.create_completion(prompt, max_tokens=spec["max_tokens"], temperature=0.0, stream=True,
                                           logit_bias={llm.token_eos(): float("-inf")}):
            if chunk["choices"][0]["finish_reason"] and not chunk["choices"][0]["text"]:
                continue  # the closing chunk carries no token
            n += 1
            first = first or time.perf_counter()
        rows.append(_decode_stats(start, first, time.perf_counter(), n))
    return {"rows": rows}


@functools.cache
def _quiet_bindings() -> tuple:
    """(bindings, their log callback, kept alive here): llama.cpp silenced and initialised once."""
    import llama_cpp.llama_cpp as lib

    @lib.llama_log_callback
    def quiet(level, text, data):
        return None

    lib.llama_log_set(quiet, None)
    lib.llama_backend_init()
    return lib, quiet


def _bare_context(spec: dict) -> tuple:
    """(bindings, context, greedy sampler): the plain C-API setup both bare loops measure."""
    from bpo_local.backends.llamacpp import buffers

    lib, _ = _quiet_bindings()
    model_params = lib.llama_model_default_params()
    buffers.apply("auto", model_params)  # what the engine loads: no AMX weight buffers (they crash)
    model = lib.llama_model_load_from_file(spec["model"].encode(), model_params)
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = N_CTX, spec["threads"], spec["threads"]
    return lib, lib.llama_init_from_model(model, params), lib.llama_sampler_init_greedy()


def run_bare(spec: dict) -> dict:
    lib, ctx, sampler = _bare_context(spec)
    rows = []
    for prompt in spec["prompts"]:
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        start = time.perf_counter()
        tokens = (lib.llama_token * len(prompt))(*prompt)
        lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(prompt)))
        one = (lib.llama_token * 1)()
        token = lib.llama_sampler_sample(sampler, ctx, -1)
        first = time.perf_counter()
        for _ in range(spec["max_tokens"] - 1):
            one[0] = token
            lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1))
            token = lib.llama_sampler_sample(sampler, ctx, -1)
        rows.append(_decode_stats(start, first, time.perf_counter(), spec["max_tokens"]))
    return {"rows": rows}


def run_interleaved(spec: dict) -> dict:
    """Ours and bare in one process, one token of each in turn: a decode ratio immune to machine drift."""
    from bpo_local.backend import Request, Sampling
    from bpo_local.backends.llamacpp import Engine

    engine = Engine(spec["model"], n_ctx=N_CTX, n_threads=spec["threads"])
    lib, ctx, sampler = _bare_context(spec)
    ours, bare = 0.0, 0.0
    for prompt in spec["prompts"]:
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        tokens = (lib.llama_token * len(prompt))(*prompt)
        lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(prompt)))
        token = lib.llama_sampler_sample(sampler, ctx, -1)
        one = (lib.llama_token * 1)()
        events = iter(engine.generate(Request(tuple(prompt), spec["max_tokens"], Sampling(temperature=0))))
        next(events)
        for _ in range(spec["max_tokens"] - 1):
            start = time.perf_counter()
            next(events)
            ours += time.perf_counter() - start
            start = time.perf_counter()
            one[0] = token
            lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1))
            token = lib.llama_sampler_sample(sampler, ctx, -1)
            bare += time.perf_counter() - start
    return {"ours_seconds": ours, "bare_seconds": bare}


def run_candidates(spec: dict) -> dict:
    """One n=5 request against 5 n=1 requests of the same prompts: seeded, no stops, equal lengths."""
    from bpo_local.backend import Request, Sampling
    from bpo_local.backends.llamacpp import Engine

    engine = Engine(spec["model"], n_ctx=N_CTX, n_threads=spec["threads"])
    together, separate = [], []
    for i, prompt in enumerate(spec["prompts"]):
        sampling = Sampling(temperature=0.9, top_p=0.9, top_k=50, seed=1000 + i)
        engine.logits(prompt[:1])  # start both variants from a cold prompt cache
        start = time.perf_counter()
        engine.generate(Request(tuple(prompt), spec["max_tokens"], sampling, n=CANDIDATES)).run()
        together.append(time.perf_counter() - start)
        engine.logits(prompt[:1])
        start = time.perf_counter()
        for k in range(CANDIDATES):
            seeded = Sampling(temperature=0.9, top_p=0.9, top_k=50, seed=1000 + i + k)
            engine.generate(Request(tuple(prompt), spec["max_tokens"], seeded)).run()
        separate.append(time.perf_counter() - start)
    return {"together": together, "separate": separate}


def run_dataset(spec: dict) -> dict:
    """optimize_many over the dataset prompts at each parallelism, on one loaded model."""
    import bpo_local

    optimizer = bpo_local.load(spec["model"], ctx=N_CTX, threads=spec["threads"])
    rows = {}
    for parallel in PARALLEL:
        start = time.perf_counter()
        results = list(optimizer.optimize_many(spec["texts"], parallel=parallel, seed=0,
                                               max_tokens=DATASET_MAX_TOKENS))
        seconds = time.perf_counter() - start
        rows[parallel] = {"seconds": seconds, "tokens": sum(r.timings.generated_tokens for r in results)}
    return {"rows": rows}


WORKERS = {"ours": run_ours, "lcp": run_llama_cpp_python, "bare": run_bare, "candidates": run_candidates,
           "interleaved": run_interleaved, "dataset": run_dataset}


def worker_main(kind: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = WORKERS[kind](spec)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# driver


def tokenize_prompts(model: Path, texts: list[str]) -> list[list[int]]:
    """BOS + BPO template, tokenized once with the model's vocabulary (vocab-only load)."""
    sys.path.insert(0, str(REPO))
    from bpo_local.backends.llamacpp.native import llama, set_verbose
    from bpo_local.backends.llamacpp.vocab import Vocab
    from bpo_local.presets import build_prompt

    lib = llama()
    set_verbose(False)
    params = lib.llama_model_default_params()
    params.vocab_only = True
    handle = lib.llama_model_load_from_file(os.fsencode(model), params)
    vocab = Vocab(lib.llama_model_get_vocab(handle))
    try:
        return [vocab.tokenize(build_prompt(t), add_bos=True) for t in texts]
    finally:
        lib.llama_model_free(handle)


def spawn(kind: str, spec_path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(spec_path)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompts", type=int, help="number of prompts (default 6, --quick 3)")
    parser.add_argument("--max-tokens", type=int, help="new tokens per prompt (default 128, --quick 48)")
    parser.add_argument("--threads", type=int, help="CPU threads for all three (default: physical cores)")
    parser.add_argument("--rounds", type=int, help="runs of each implementation, interleaved (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="a ~1-2 minute run")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return

    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    sys.path.insert(0, str(REPO))
    from bpo_local.backends.llamacpp import physical_cores

    n_prompts = args.prompts or (3 if args.quick else 6)
    rounds = args.rounds or (1 if args.quick else 2)
    dataset = [row["prompt"] for row in json.loads(args.data.read_text())]
    texts = dataset[:n_prompts]
    spec = {"model": str(args.model), "threads": args.threads or physical_cores(),
            "texts": dataset[:DATASET_PROMPTS], "max_tokens": args.max_tokens or (48 if args.quick else 128),
            "prompts": tokenize_prompts(args.model, texts)}
    spec_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_generate_{os.getpid()}.json"
    spec_path.write_text(json.dumps(spec))
    print(f"model {args.model.name}, {n_prompts} prompts of {min(map(len, spec['prompts']))}-"
          f"{max(map(len, spec['prompts']))} tokens, {spec['max_tokens']} new tokens, {spec['threads']} threads, {rounds} round(s)\n")
    kinds = ["ours", "lcp", "bare"]
    results: dict[str, dict] = {kind: {"rows": [], "peak_rss_mib": 0.0} for kind in kinds}
    try:
        for round_ in range(rounds):  # rotate the order so drift on a busy machine hits all alike
            for kind in kinds[round_ % 3:] + kinds[:round_ % 3]:
                got = spawn(kind, spec_path)
                results[kind]["rows"] += got["rows"]
                results[kind]["peak_rss_mib"] = max(results[kind]["peak_rss_mib"], got["peak_rss_mib"])
        candidates = spawn("candidates", spec_path)
        interleaved = spawn("interleaved", spec_path)
        dataset_run = spawn("dataset", spec_path)
    finally:
        spec_path.unlink(missing_ok=True)

    def median(kind: str, key: str) -> float:
        return statistics.median(row[key] for row in results[kind]["rows"])

    floor_tps, floor_ttft = median("bare", "tps"), median("bare", "ttft")
    names = {"ours": "(a) bpo-local Engine", "lcp": "(b) llama-cpp-python", "bare": "(c) bare C-API loop"}
    print(f"{'implementation':24} {'decode tok/s':>12} {'x bare':>7} {'TTFT ms':>9} {'x bare':>7} "
          f"{'tokens':>7} {'peak RSS MiB':>13}")
    for kind, name in names.items():
        tps, ttft = median(kind, "tps"), median(kind, "ttft")
        tokens = statistics.median(row["tokens"] for row in results[kind]["rows"])
        print(f"{name:24} {tps:12.1f} {tps / floor_tps:7.3f} {ttft * 1000:9.1f} {ttft / floor_ttft:7.3f} "
              f"{tokens:7.0f} {results[kind]['peak_rss_mib']:13.1f}")
    together, separate = statistics.median(candidates["together"]), statistics.median(candidates["separate"])
    cached = statistics.median(row["cached"] for row in results["ours"]["rows"])
    print(f"(a) reuses the cached prompt prefix across prompts (median {cached:.0f} tokens: the BPO template); "
          "(b) and (c) start each prompt cold")
    print(f"\ncandidates: n={CANDIDATES} in one request {together:.2f} s, {CANDIDATES} x n=1 {separate:.2f} s "
          f"(medians per prompt) -> ratio {together / separate:.3f} (target <= 0.75)")
    print(f"decode ratio ours / bare: {median('ours', 'tps') / floor_tps:.3f} across processes, "
          f"{interleaved['bare_seconds'] / interleaved['ours_seconds']:.3f} token-interleaved in one process "
          "(target >= 0.97)")
    rows = dataset_run["rows"]
    rates = {int(k): DATASET_PROMPTS / row["seconds"] for k, row in rows.items()}
    print(f"\ndataset throughput ({DATASET_PROMPTS} prompts, stable, seed 0, <= {DATASET_MAX_TOKENS} new tokens): "
          + ", ".join(f"--parallel {k} {rate:.2f} prompts/s ({rows[str(k)]['tokens']} tokens)" for k, rate in rates.items())
          + f" -> ratio {rates[PARALLEL[-1]] / rates[PARALLEL[0]]:.2f}x")


if __name__ == "__main__":
    main()
