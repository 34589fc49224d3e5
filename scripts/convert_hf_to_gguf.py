#!/usr/bin/env python3
"""Convert a Hugging Face Llama/Mistral checkpoint (folder or Hub id) to one GGUF file.

Usage: convert_hf_to_gguf.py SOURCE --outfile OUT.gguf [--outtype f32|f16|bf16] [--name NAME] [--revision REV]

The same converter ``bpo-local convert`` uses, without quantization or the model store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from bpo_local.errors import BpoLocalError
    from bpo_local.models.convert import DEFAULT_SOURCE, OUTTYPES, convert_checkpoint, fetch_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=DEFAULT_SOURCE,
                        help=f"folder or Hub id (default {DEFAULT_SOURCE})")
    parser.add_argument("--outfile", type=Path, required=True, help="GGUF file to write")
    parser.add_argument("--outtype", choices=list(OUTTYPES), default="f16", help="tensor type (default f16)")
    parser.add_argument("--name", help="general.name (default: the folder or repo name)")
    parser.add_argument("--revision", help="Hub branch, tag or commit")
    args = parser.parse_args(argv)
    try:
        checkout = fetch_source(args.source, revision=args.revision)
        report = convert_checkpoint(checkout.path, args.outfile, outtype=args.outtype,
                                    name=args.name or (checkout.repo_id or checkout.path.name).split("/")[-1])
    except BpoLocalError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"wrote {report.path} ({report.n_tensors} tensors, {report.n_params / 1e6:.1f}M parameters, "
          f"{report.size_bytes / 1e6:.1f} MB), written {report.written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
