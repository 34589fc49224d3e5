"""What llama.cpp's extra CPU weight buffers are worth: decode and prompt speed per ``--cpu-buffers`` policy.

Usage:
    python benchmarks/bench_cpu_buffers.py                 # ~5 min: Q4_K_M, Q8_0, Q4_0, 3 rounds
    python benchmarks/bench_cpu_buffers.py --rounds 5 --threads 2

A random Llama checkpoint with 16 layers, 1024 wide (265 M parameters, a size where weight layout matters) is
converted to F16 and quantized once (cached under --workdir). Each policy then loads each quantization in its
own process, rounds interleaved so machine drift hits every policy alike: a 256-token prompt evaluated at once
(prompt tok/s), then 64 greedy tokens (decode tok/s). Printed: medians, and each policy's ratio against
``all`` (llama.cpp's own choice). On a machine without AMX, ``auto`` loads exactly what ``all`` loads; on an AMX
Xeon ``all`` crashes on these quantized models (so it is skipped there) and ``auto`` is compared with ``none``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests")]

from _checkpoints import llama2_tokenizer_files, llama_config, save_safetensors, write_json  # noqa: E402

HIDDEN, LAYERS, HEADS, FFN, VOCAB = 1024, 16, 16, 2816, 32000
TOKENIZER = REPO.parent / "shared" / "fixtures" / "llama2-tokenizer.model"
QUANTS = ("q4_k_m", "q8_0", "q4_0")
PROMPT_TOKENS, DECODE_TOKENS = 256, 64

WORKER = """
import json, sys, time
from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine
path, policy, threads, n_prompt, n_decode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with Engine(path, n_ctx=1024, n_threads=threads, cpu_buffers=policy) as engine:
    prompt = tuple(range(100, 100 + n_prompt))
    start = time.perf_counter()
    engine.logits(prompt)
    prompt_s = time.perf_counter() - start
    result = engine.generate(Request(prompt[:8], max_new_tokens=n_decode, sampling=Sampling(temperature=0))).run()
    print(json.dumps({"prompt_tps": n_prompt / prompt_s, "decode_tps": result.timings.tokens_per_second,
                      "used": engine.buffers.offered}))
"""


def build_models(workdir: Path) -> dict[str, Path]:
    """The F16 conversion of a random 16-layer checkpoint, quantized to each of QUANTS (cached)."""
    from bpo_local.models.convert import convert_checkpoint
    from bpo_local.models.quantize import quantize

    models = {q: workdir / f"bench-{q}.gguf" for q in QUANTS}
    if all(p.is_file() for p in models.values()):
        return models
    checkpoint = workdir / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
                   p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
                   p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                   p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                   p + "mlp.down_proj.weight": (HIDDEN, FFN)}
    weights = {n: (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float16) for n, s in shapes.items()}
    save_safetensors(checkpoint / "model.safetensors", weights, "f16")
    write_json(checkpoint, "config.json", llama_config(VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                       num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                                       intermediate_size=FFN))
    write_json(checkpoint, "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    llama2_tokenizer_files(checkpoint, TOKENIZER, pad=False)
    f16 = workdir / "bench-f16.gguf"
    convert_checkpoint(checkpoint, f16, outtype="f16")
    for quant, path in models.items():
        quantize(f16, path, quant)
    return models


def measure(path: Path, policy: str, threads: int) -> dict | None:
    """One load in its own process; None if it crashed (exit status and the last of stderr are printed)."""
    done = subprocess.run([sys.executable, "-c", WORKER, str(path), policy, str(threads), str(PROMPT_TOKENS),
                           str(DECODE_TOKENS)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(f"  {path.name} --cpu-buffers {policy}: exit {done.returncode} {done.stderr.strip()[-200:]}")
        return None
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bpo-bench-cpu-buffers")
    args = parser.parse_args()

    from bpo_local.backends.llamacpp import buffers

    available = buffers.available()
    policies = ["auto", "none"] + ([] if "AMX" in available else ["all"])
    print(f"extra CPU buffer types here: {', '.join(available) or 'none'}; auto uses "
          f"{', '.join(buffers.choose('auto').offered) or 'plain buffers'}")
    models = build_models(args.workdir)
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.rounds):
        for quant, path in models.items():
            for policy in policies:
                if (got := measure(path, policy, args.threads)) is not None:
                    runs.setdefault((quant, policy), []).append(got)
    baseline = "all" if "all" in policies else "none"
    print(f"\n{LAYERS} layers x {HIDDEN}, {args.threads} threads, medians of {args.rounds} rounds; x = ratio to "
          f"--cpu-buffers {baseline}")
    print(f"{'quant':<8} {'policy':<6} {'buffers':<12} {'prompt tok/s':>13} {'x':>6} {'decode tok/s':>13} {'x':>6}")
    for quant in models:
        base = runs.get((quant, baseline))
        for policy in policies:
            got = runs.get((quant, policy))
            if not got:
                continue
            prompt = statistics.median(r["prompt_tps"] for r in got)
            decode = statistics.median(r["decode_tps"] for r in got)
            bp = statistics.median(r["prompt_tps"] for r in base) if base else float("nan")
            bd = statistics.median(r["decode_tps"] for r in base) if base else float("nan")
            used = ",".join(got[0]["used"]) or "plain"
            print(f"{quant:<8} {policy:<6} {used:<12} {prompt:>13.1f} {prompt / bp:>6.2f} {decode:>13.1f} "
                  f"{decode / bd:>6.2f}")


if __name__ == "__main__":
    main()
