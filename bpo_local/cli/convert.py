"""`bpo-local convert`: a Hub checkpoint (default zai-org/BPO), folder or F16 GGUF -> quantized store builds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models.quantize import DEFAULT_QUANTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="build quantized GGUFs of BPO into the local store",
        description="Fetch a checkpoint, convert it to an F16 GGUF, quantize it with llama.cpp, check each "
                    "quantization against F16 on BPO's task (KL divergence), and add the builds to the store.")
    parser.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                        help="Hub repo id, checkpoint folder or F32/F16/BF16 .gguf "
                             "(default: zai-org/BPO, formerly THUDM/BPO)")
    parser.add_argument("--revision", metavar="R", help="Hub branch, tag or commit (default: main)")
    parser.add_argument("--quant", default=",".join(DEFAULT_QUANTS), metavar="TYPES",
                        help="comma-separated types, e.g. q4_k_m,q5_k_m,q6_k,q8_0,q4_0,f16 (default: %(default)s)")
    parser.add_argument("--outtype", default="f16", choices=("f16", "bf16", "f32"),
                        help="precision of the intermediate GGUF (default: %(default)s)")
    parser.add_argument("--keep-f16", action="store_true", help="keep the intermediate GGUF as a build too")
    parser.add_argument("--no-verify", action="store_true", help="skip the KL check against the intermediate")
    parser.add_argument("--preset", metavar="NAME",
                        help="the optimizer preset the build runs by default: stable (BPO), pas, mepo or one of "
                             "yours (default: the source's, else stable)")
    parser.add_argument("--name", help="model name in the store (default: the source's name, lowercased)")
    parser.add_argument("--data", type=Path, metavar="FILE",
                        help="eval pairs for the KL check: JSON list or JSONL with prompt/optimized_prompt")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores)")
    parser.add_argument("--gpu-layers", type=int, metavar="N", help="layers to offload while verifying")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import models_dir
    from ..models.build import DEFAULT_SOURCE, ConvertPlan, convert
    from ..models.quantize import parse_quants
    from ..models.store import ModelStore
    from .build import progress_bars
    from .common import status_console
    from .models import print_builds
    from .verify import print_results

    plan = ConvertPlan(source=args.source or DEFAULT_SOURCE, revision=args.revision,
                       quants=parse_quants(args.quant), outtype=args.outtype, keep_f16=args.keep_f16,
                       verify=not args.no_verify, preset=args.preset, name=args.name, eval_data=args.data,
                       threads=args.threads, gpu_layers=args.gpu_layers)
    store = ModelStore(models_dir())
    with progress_bars(status_console()) as progress:
        builds = convert(plan, store, progress=progress)
    print_builds(builds, default=store.best())
    verified = [(b.name, b.verification) for b in builds if b.verification]
    if verified:
        print_results(verified)
    return 0
