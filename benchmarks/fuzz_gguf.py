"""Load seeded damaged copies of the SmolLM2 test GGUF and count how each ended.

    python benchmarks/fuzz_gguf.py                 # 1000 mutations (~5-8 min on 2 cores)
    python benchmarks/fuzz_gguf.py --count 200 --start 5000 --show error

Prints the outcome counts (ok, error, traceback, signal, hang) overall and per kind of damage, the
signals/hangs/tracebacks in full, and the median time of check_gguf on the pristine file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    from _gguf_fuzz import KINDS, Layout, counts, mutation, run
    from conftest import _fetch_smollm2

    from bpo_local.backends.llamacpp.gguf_check import check_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--show", choices=["error", "ok"], help="also print every outcome of this status")
    args = parser.parse_args()

    base = _fetch_smollm2()
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        check_gguf(base)
        timings.append(time.perf_counter() - start)
    print(f"check_gguf({base.name}): median {statistics.median(timings) * 1000:.0f} ms of 5")

    layout = Layout.of(base)
    head = base.read_bytes()[:layout.data_offset + 64]
    mutations = [mutation(layout, seed, head) for seed in range(args.start, args.start + args.count)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        outcomes = run(base, mutations, Path(work))
    print(f"{len(outcomes)} mutations (seeds {args.start}..{args.start + args.count - 1}) "
          f"in {time.perf_counter() - start:.0f} s: {counts(outcomes)}")
    per_kind = Counter((o.mutation.kind, o.status) for o in outcomes)
    for kind in KINDS:
        print(f"  {kind:13} " + " ".join(f"{s}={per_kind[kind, s]}" for s in ("ok", "error", "traceback",
                                                                               "signal", "hang")))
    for o in outcomes:
        if o.status in ("traceback", "signal", "hang") or o.status == args.show:
            print(f"{o.status} {o.mutation}: {o.detail}")


if __name__ == "__main__":
    main()
