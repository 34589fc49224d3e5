"""`bpo-local optimize`: one prompt from the argument or stdin, or a batch with --jsonl / --lines."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..presets import MODES, parse_parameter
from .advice import describe
from .common import add_model_options, load_optimizer, positive_int, status_console

if TYPE_CHECKING:
    from ..batch import Sink
    from ..optimizer import Optimizer, OptimizeResult
    from ..runlog import RunLog

DEFAULT_PARALLEL = 4

EPILOG = """\
output:
  Stdout carries only the result. Several candidates (aggressive mode, or -n K) are separated by a
  line holding only "---" (aggressive candidates are one line each; prefer --json for multi-line
  ones). Errors go to stderr as one line; exit codes: 0 ok, 1 failure, 2 bad usage or input, 130
  Ctrl-C. --json prints one object: prompt, optimized_prompt, candidates, mode,
  params (n, temperature, top_p, top_k, max_tokens, seed), model, finish_reasons, timings.

batches:
  --jsonl reads one JSON object per line (or one JSON array of objects); the prompt is the first
  non-empty string under prompt, instruction, input, query, text. Each input gets one JSON line out, in
  order: the input object plus optimized_prompt, candidates (when several), line and input_sha256.
  A bad input gets {"line", "input_sha256", "error"}, the batch goes on, and the exit code is 1.
  --lines reads one prompt per line and writes one line per input line; candidates are separated by a
  TAB and \\, newline, CR, TAB inside a prompt are escaped as \\\\, \\n, \\r, \\t. --lines --json writes
  the JSON records instead. --resume OUT appends the JSON records to OUT (fsynced one by one) instead
  of stdout and skips the inputs OUT already answers: rerun the same command after a crash or Ctrl-C.
  With --seed every input uses that seed. --parallel K (default 4) decodes up to K prompts together
  (records still come out in input order; 1 = one after another); a prompt starts only when the
  context (--ctx) can hold it and those in flight at their --max-tokens, so fewer may run at once.
  Progress shows on stderr when it is a terminal.

examples:
  bpo-local optimize "how do I make a cake?"
  echo "tell me a joke" | bpo-local optimize --mode aggressive --json
  bpo-local optimize --lines prompts.txt > optimized.txt
  bpo-local optimize --jsonl bpo_test.json --resume out.jsonl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "optimize", help="optimize a prompt (argument or stdin) or a batch of prompts",
        description="Rewrite a prompt with BPO so that a chat model answers it better.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", metavar="PROMPT",
                        help="the prompt; '-' or none reads stdin. With --jsonl/--lines: an input file")
    sampling = parser.add_argument_group("sampling (defaults: the preset's)")
    sampling.add_argument("--mode", choices=MODES, default=None,
                          help="BPO's stable: one careful rewrite; aggressive: 5 bolder candidates "
                               "(default: the model's own preset, else stable)")
    sampling.add_argument("--preset", dest="mode", metavar="NAME",
                          help="any optimizer preset: stable, aggressive, pas, mepo, or a TOML file's name in "
                               "the config folder's presets/")
    sampling.add_argument("-a", "--aggressive", dest="mode", action="store_const", const="aggressive",
                          help="same as --mode aggressive")
    sampling.add_argument("-n", type=parameter("n"), metavar="K", help="number of candidates")
    sampling.add_argument("--temperature", type=parameter("temperature"), metavar="T", help="0 = greedy")
    sampling.add_argument("--top-p", type=parameter("top_p"), metavar="P")
    sampling.add_argument("--top-k", type=parameter("top_k"), metavar="K", help="0 = off")
    sampling.add_argument("--max-tokens", type=parameter("max_tokens"), metavar="N", help="new tokens per candidate")
    sampling.add_argument("--seed", type=parameter("seed"), help="same seed and model -> same output")
    output = parser.add_argument_group("input and output")
    batch = output.add_mutually_exclusive_group()
    batch.add_argument("--jsonl", action="store_true", help="batch: JSON objects, one per line")
    batch.add_argument("--lines", action="store_true", help="batch: plain text, one prompt per line")
    output.add_argument("--json", action="store_true", help="JSON output (JSONL for batches)")
    output.add_argument("--resume", type=Path, metavar="OUT", help="batch: append to OUT, skipping what it answers")
    output.add_argument("--parallel", type=positive_int, metavar="K",
                        help=f"batch: prompts decoded together (default {DEFAULT_PARALLEL})")
    output.add_argument("--no-log", action="store_true", help="do not record this run in the run log")
    add_model_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for option, value in (("--resume", args.resume), ("--parallel", args.parallel)):
        if value is not None and not (args.jsonl or args.lines):
            raise UsageError(f"{option} works on batches; add --jsonl or --lines")
    if args.jsonl or args.lines:
        return _run_batch(args)
    prompt = read_prompt(args.prompt)
    with load_optimizer(args) as opt, _open_log(args) as log:
        result = _optimize_one(opt, prompt, args, log)
        print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else _format(result))
        sys.stdout.flush()
        _record(opt, result, log)
    _warn_if_empty(result)
    return 0


def _warn_if_empty(result: OptimizeResult) -> None:
    """An empty rewrite is a result, not an error, but BPO rewrites every prompt: say so on stderr."""
    if any(c.strip() for c in result.candidates):
        return
    reasons = ", ".join(sorted(set(result.finish_reasons)))
    print(f"warning: the rewrite is empty ({result.timings.generated_tokens} new tokens, finished: {reasons}); "
          f"BPO rewrites every prompt, so check that {result.model} is a BPO model", file=sys.stderr)


def read_prompt(arg: str | None) -> str:
    """The prompt from the argument, or from stdin when there is none or it is '-'."""
    if arg is not None and arg != "-":
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("the prompt argument is not valid UTF-8; pass UTF-8 text or pipe it on stdin") from None
        text = arg
    elif arg is None and sys.stdin.isatty():
        raise UsageError("no prompt: pass it as an argument or pipe it on stdin (`-` reads the terminal until Ctrl-D)")
    else:
        text = _decode_stdin(sys.stdin.buffer.read())
    if not text.strip():
        raise UsageError("empty prompt; pass the prompt to optimize as an argument or on stdin")
    return text.strip()


def _decode_stdin(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin is not valid UTF-8 (byte {exc.start + 1}); convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": args.mode, "seed": args.seed, "n": args.n, "temperature": args.temperature,
        "top_p": args.top_p, "top_k": args.top_k, "max_tokens": args.max_tokens,
    }


def _streams(args: argparse.Namespace) -> bool:
    """Stream tokens only to a person: stdout is a terminal and not asked for JSON."""
    return sys.stdout.isatty() and not args.json


def _optimize_one(opt: Optimizer, prompt: str, args: argparse.Namespace, log: RunLog | None) -> OptimizeResult:
    from .render import stream_to_terminal

    stream = opt.stream(prompt, **_sampling(args))
    if not _streams(args):
        try:
            with status_console().status("optimizing"):
                for _ in stream:
                    pass
        except KeyboardInterrupt:
            stream.cancel()
            _record(opt, stream.result, log)
            raise
        return stream.result
    try:
        return stream_to_terminal(stream)
    except KeyboardInterrupt:
        _record(opt, stream.result, log)
        raise


def _record(opt: Optimizer, result: OptimizeResult, log: RunLog | None) -> None:
    """Log ``result`` (finished or interrupted) unless --no-log."""
    if log is not None:
        log.record(result, opt.model_sha256(), backend=opt.info.backend)


def _format(result: OptimizeResult) -> str:
    from ..optimizer import format_candidates

    return format_candidates(result.candidates)


def _open_log(args: argparse.Namespace) -> AbstractContextManager[RunLog | None]:
    """The run log as a context manager, or a null one with --no-log."""
    if args.no_log:
        return nullcontext(None)
    from ..runlog import RunLog

    return RunLog.open()


def _run_batch(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..batch import ResumableOutput, process, read_items
    from .render import JsonlSink, LinesSink, batch_progress

    items = read_items(_read_input(args.prompt), "jsonl" if args.jsonl else "lines")
    resume = ResumableOutput(args.resume) if args.resume is not None else None
    with resume or nullcontext():
        todo = list(resume.pending(items)) if resume else items
        if resume:
            sink: Sink = resume
        else:
            sink = JsonlSink(sys.stdout) if args.jsonl or args.json else LinesSink(sys.stdout)
        failed = 0
        if todo:
            sampling = _sampling(args)
            with load_optimizer(args) as opt, _open_log(args) as log:
                # Records on a terminal show the progress themselves; a bar would tangle with them.
                bar_console = status_console() if resume or not sys.stdout.isatty() else Console(quiet=True)
                with batch_progress(bar_console, len(todo)) as advance:

                    def on_item(item: object, result: OptimizeResult | None) -> None:
                        if result is not None:
                            _record(opt, result, log)
                        advance()

                    parallel = args.parallel or DEFAULT_PARALLEL
                    failed = process(todo, lambda prompts: opt.optimize_many(prompts, parallel=parallel, **sampling),
                                     sink, on_item, describe)
        if resume:
            failed = resume.failed
    if failed:
        where = "their output lines are empty" if isinstance(sink, LinesSink) else \
            f"their records in {args.resume or 'the output'} carry \"error\""
        print(f"error: {failed} input(s) failed; {where}", file=sys.stderr)
        return 1
    return 0


def _read_input(arg: str | None) -> bytes:
    """Batch input: the named file, or stdin when there is none or it is '-'."""
    if arg is not None and arg != "-":
        try:
            return Path(arg).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read input file {arg}: {exc.strerror}; check the path") from None
    if arg is None and sys.stdin.isatty():
        raise UsageError("no input: pipe the batch on stdin or name a file (`-` reads the terminal until Ctrl-D)")
    return sys.stdin.buffer.read()


def parameter(name: str) -> Any:
    """An argparse type for the preset parameter ``name``: its range from ``presets.LIMITS``."""

    def parse(text: str) -> int | float:
        try:
            return parse_parameter(name, text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse
