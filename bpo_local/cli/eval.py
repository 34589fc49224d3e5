"""`bpo-local eval`: does BPO help a given chat model? The paper's pairwise evaluation, resumable."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BpoLocalError, UsageError
from ..presets import MODES
from .advice import describe
from .common import add_model_options, choose_or_build, load_optimizer, status_console

if TYPE_CHECKING:
    from rich.console import Console

    from ..eval import Dataset, EvalRun, EvalSettings, StageCount
    from ..optimizer import Optimizer
    from ..targets import ChatTarget

EPILOG = """\
how it works:
  BPO (--model / --server) rewrites each prompt of the data set; the target answers the original and
  the rewrite (temperature 0.7, top-p 1.0 as in the paper; --seed); the judge compares the two answers
  with the paper's pair-v2 prompt at temperature 0, once with each answer first. A verdict that flips
  with the order counts as a tie; a judgment without [[A]], [[B]] or [[C]] is counted as "no verdict".
  The table gives BPO's win / tie / loss rates over the judged pairs with 95% bootstrap intervals.
  In aggressive mode the first of BPO's candidates is evaluated.

comparing optimizers:
  --optimizer A --optimizer B ... runs the same for each optimizer (a preset, @ a model if not
  --model's: pas@pas-7b:q4_k_m) over the same target answers to the original prompts, then judges every
  two of them head to head (A's answer against B's, both orders). One table: each optimizer vs original,
  then each A vs B; each row's win / tie / loss is the first-named side's.

target and judge:
  A GGUF path or store name (run locally with its own chat template), or the URL of an
  OpenAI-compatible server (llama-server, vLLM, OpenAI) with --target-model / --judge-model (default:
  the first model it lists) and --target-key / --judge-key (default: $OPENAI_API_KEY). Several URLs
  separated by commas share the work as a fleet (a server that fails has its requests retried on the
  others). Every stage keeps --parallel requests in flight (per server); a server answering 429 or 503
  is waited out as its Retry-After says and sent fewer requests until it recovers. A local model
  decodes --parallel answers together, which may change a sampled token (not a greedy one, as a rule).

data sets (shipped, Apache-2.0, from thu-coai/BPO): vicuna_eval (80), dolly_eval (200),
  self_instruct_eval (252), bpo_test (200); or a JSON/JSONL file. Repeat --data or separate with commas.

output and resuming:
  --out DIR gets report.md (every pair: prompt, rewrite, both answers, both judgments), report.json,
  and cache/ with every finished rewrite, answer and judgment. Run the same command again after Ctrl-C
  or a crash: finished work is read back, not redone; changed settings redo only what they touch.
  Stdout: the table, or the report as JSON with --json; stderr: progress (bars on a terminal, a line
  per stage otherwise) and where the report went. Exit codes: 0 ok, 1 some pairs failed (see the
  report) or a model failed, 2 bad usage, 130 Ctrl-C.

example:
  bpo-local eval --target llama-2-7b-chat.Q4_K_M.gguf --judge http://127.0.0.1:8080 --limit 20
"""

DEFAULT_DATA = "vicuna_eval"
DEFAULT_OUT = "bpo-eval"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="does BPO help a model? pairwise win/tie/loss of answers to original vs optimized prompts",
        description="Answer original and BPO-optimized prompts with a target model and let a judge compare them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    models = parser.add_argument_group("target and judge")
    for role in ("target", "judge"):
        models.add_argument(f"--{role}", required=True, metavar="MODEL", help="GGUF path, store name or server URL")
        models.add_argument(f"--{role}-model", metavar="ID", help="model id on the server (default: its first)")
        models.add_argument(f"--{role}-key", metavar="KEY", help="the server's API key (default: $OPENAI_API_KEY)")
    run = parser.add_argument_group("run")
    run.add_argument("--data", action="append", metavar="NAME|FILE", help=f"data set(s) (default: {DEFAULT_DATA})")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N items of each data set")
    run.add_argument("--mode", choices=MODES, help="BPO's mode (default: the model's own preset, else stable)")
    run.add_argument("--preset", dest="mode", metavar="NAME",
                     help="the optimizer preset: stable, aggressive, pas, mepo, or a TOML file's name in the config "
                          "folder's presets/")
    run.add_argument("--optimizer", action="append", metavar="PRESET[@MODEL]",
                     help="compare optimizers: repeat for each (a preset, on --model or on MODEL, a GGUF path or "
                          "store name); every one is judged against the original prompts with the same target, "
                          "judge and answers, and every two of them head to head")
    run.add_argument("--seed", type=int, default=0, metavar="N",
                     help="seed of BPO, the answers and the bootstrap (default: 0)")
    run.add_argument("--temperature", type=float, default=0.7, metavar="T",
                     help="the target's temperature (default: 0.7)")
    run.add_argument("--top-p", type=float, default=1.0, metavar="P", help="the target's top-p (default: 1.0)")
    run.add_argument("--max-tokens", type=int, default=1024, metavar="N", help="answer length cap (default: 1024)")
    run.add_argument("--judge-max-tokens", type=int, default=512, metavar="N",
                     help="judgment length cap (default: 512)")
    run.add_argument("--bpo-max-tokens", type=int, metavar="N", help="rewrite length cap (default: the mode's)")
    run.add_argument("--parallel", type=int, default=4, metavar="K",
                     help="requests in flight per model in every stage: rewrites, answers and judgments decoded "
                          "together on a local model, sent at once to a server (per server for several URLs) "
                          "(default: 4)")
    run.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="DIR",
                     help=f"report and cache folder (default: {DEFAULT_OUT})")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_eval_command)


def run_eval_command(args: argparse.Namespace) -> int:
    from ..atomic import write_text_atomic
    from ..eval import EvalSettings, comparison_dict, render_comparison, render_markdown
    from ..targets import ChatSettings

    _check(args)
    settings = EvalSettings(
        mode=args.mode, seed=args.seed, bpo_max_tokens=args.bpo_max_tokens, parallel=args.parallel,
        answer=ChatSettings(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed),
        judge=ChatSettings(max_tokens=args.judge_max_tokens, temperature=0.0, seed=args.seed),
    )
    datasets, console = _datasets(args), status_console()
    specs = [_spec(text) for text in args.optimizer] if args.optimizer else [(args.mode, None)]
    with ExitStack() as stack:
        target = stack.enter_context(closing(_open(args, "target", console)))
        same = (args.judge, args.judge_model, args.judge_key) == (args.target, args.target_model, args.target_key)
        judge = target if same else stack.enter_context(closing(_open(args, "judge", console)))
        session = _Session(args, datasets, target, judge, settings, console)
        runs = [session.evaluate(*spec) for spec in specs]  # one optimizer loaded at a time
        duels = [session.head_to_head(first, second) for first, second in combinations(runs, 2)]
    reports = [report for _, report in runs]
    report = reports[0] if len(reports) == 1 else comparison_dict(reports, duels)
    write_text_atomic(args.out / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(args.out / "report.md", render_markdown(report) if len(reports) == 1 else
                      render_comparison(report))
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_table(report)
    print(f"report: {args.out / 'report.md'} and report.json", file=sys.stderr)
    failed = sum(r["errors"] for each in [*reports, *duels] for r in each["results"] if r["dataset"] != "all")
    if failed:
        print(f"error: {failed} pair(s) failed before a verdict; {args.out / 'report.md'} says why", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class _Session:
    """What every comparison of one run shares: the flags, data, target, judge, settings and the console."""

    args: argparse.Namespace
    datasets: list[Dataset]
    target: ChatTarget
    judge: ChatTarget
    settings: EvalSettings
    console: Console

    def evaluate(self, preset: str | None, model: str | None) -> tuple[EvalRun, dict[str, Any]]:
        """One optimizer (``preset`` on ``model``, None for --model's) against the original prompts: its run
        and report. The answers and judgments it shares with other optimizers come from the cache."""
        from ..eval import report_dict, run_eval, run_settings, summarize

        args = self.args
        model_args = args if model is None else argparse.Namespace(**{**vars(args), "model": model, "server": None})
        items = [item for dataset in self.datasets for item in dataset.items]
        with self._bpo(model_args) as optimizer, _progress(self.console) as progress:
            chosen = replace(self.settings, mode=optimizer.preset(preset).name)  # None: the model's own preset
            run = run_eval(items, optimizer, self.target, self.judge, chosen, args.out / "cache", progress)
            meta = run_settings(optimizer.info.name, self.target.name, self.judge.name, chosen,
                                [d.name for d in self.datasets], args.limit)
        return run, report_dict(run, summarize(run.pairs, args.seed), meta)

    def _bpo(self, model_args: argparse.Namespace) -> AbstractContextManager[Optimizer]:
        """BPO as ``model_args`` name it: on a local target's or judge's engine when it is the same GGUF with the
        context BPO asks for (a model named twice is loaded once, and stays open for its other role), else loaded
        for this comparison."""
        from ..optimizer import Optimizer
        from ..targets.local import LocalChat

        choice = choose_or_build(model_args)
        if isinstance(choice, Path):
            for model in (self.target, self.judge):
                engine = model.shares(choice) if isinstance(model, LocalChat) else None
                if engine is not None and model_args.ctx in (None, engine.info.n_ctx):  # BPO's --ctx, if given
                    return nullcontext(Optimizer(engine))
        return load_optimizer(model_args, choice)

    def head_to_head(self, first: tuple[EvalRun, dict[str, Any]],
                     second: tuple[EvalRun, dict[str, Any]]) -> dict[str, Any]:
        """The report of ``first``'s answers judged against ``second``'s (the rates are ``first``'s)."""
        from ..eval import head_to_head_settings, report_dict, run_head_to_head, summarize

        with _progress(self.console) as progress:
            run = run_head_to_head(first[0], second[0], self.judge, self.settings, self.args.out / "cache", progress)
        meta = head_to_head_settings(first[1]["settings"], second[1]["settings"])
        return report_dict(run, summarize(run.pairs, self.args.seed), meta)


def _spec(text: str) -> tuple[str, str | None]:
    """``--optimizer PRESET[@MODEL]`` as (preset, model or None for --model's)."""
    preset, at, model = text.partition("@")
    if not preset.strip() or (at and not model.strip()):
        raise UsageError(f"--optimizer {text!r}: give a preset name, optionally @ a model (e.g. pas@pas-7b:q4_k_m)")
    return preset.strip(), model.strip() or None


def _check(args: argparse.Namespace) -> None:
    """Flag values, before anything is loaded."""
    for flag, value, low in (("--limit", args.limit, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--judge-max-tokens", args.judge_max_tokens, 1), ("--parallel", args.parallel, 1),
                             ("--bpo-max-tokens", args.bpo_max_tokens, 1)):
        if value is not None and value < low:
            raise UsageError(f"{flag} must be at least {low} (got {value})")
    if args.temperature < 0:
        raise UsageError(f"--temperature must be at least 0 (got {args.temperature})")
    if args.optimizer and args.mode:
        raise UsageError("--optimizer names each optimizer's preset; drop --mode/--preset")
    repeated = sorted({text for text in args.optimizer or [] if args.optimizer.count(text) > 1})
    if repeated:
        raise UsageError(f"--optimizer {repeated[0]} is given twice; name each optimizer once")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {args.top_p})")


def _datasets(args: argparse.Namespace) -> list[Dataset]:
    from ..eval import load_dataset

    names = [name.strip() for arg in args.data or [DEFAULT_DATA] for name in arg.split(",") if name.strip()]
    if not names:
        raise UsageError("--data names no data set")
    return [load_dataset(name, args.limit) for name in names]


def _open(args: argparse.Namespace, role: str, console: Console) -> ChatTarget:
    """The target or judge the flags name, loaded or connected now; its failure names the flag."""
    from ..config import load_config
    from ..targets import open_target

    source = getattr(args, role)
    cpu_buffers = args.cpu_buffers or load_config().cpu_buffers
    key = getattr(args, f"{role}_key") or os.environ.get("OPENAI_API_KEY")
    try:
        with console.status(f"opening {role} {source}"):
            return open_target(source, model=getattr(args, f"{role}_model"), key=key, gpu_layers=args.gpu_layers,
                               threads=args.threads, cpu_buffers=cpu_buffers, verbose=args.debug)
    except BpoLocalError as exc:
        named = BpoLocalError(f"--{role} {source}: {describe(exc)}")
        named.exit_code = exc.exit_code
        raise named from exc


class _Bars:
    """On a terminal: one rich progress bar per stage, with done/total, the rate of this run's units and the time
    left."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def start(self, stage: str, total: int, cached: int) -> None:
        self._tasks[stage] = self._progress.add_task(stage, total=total, completed=cached)  # no rate from the cache

    def advance(self, stage: str) -> None:
        self._progress.advance(self._tasks[stage])

    def finish(self, stage: str, count: StageCount) -> None:
        pass


class _Lines:
    """Off a terminal (a log, a pipe): one line per stage on stderr when it ends, with its counts and rate."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def start(self, stage: str, total: int, cached: int) -> None:
        self._started[stage] = time.monotonic()

    def advance(self, stage: str) -> None:
        pass

    def finish(self, stage: str, count: StageCount) -> None:
        seconds = time.monotonic() - self._started[stage]
        rate = f", {count.computed / seconds * 60:.1f}/min" if count.computed and seconds > 0 else ""
        print(f"{stage}: {count.total - count.failed}/{count.total} done ({count.cached} cached, {count.computed} "
              f"now, {count.failed} failed) in {seconds:.1f} s{rate}", file=sys.stderr, flush=True)


@contextmanager
def _progress(console: Console) -> Iterator[_Bars | _Lines]:
    """How the stages show their progress: bars on a terminal, else one line per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if console.quiet:
        yield _Lines()
        return
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), _rate_column(),
                  TimeRemainingColumn(), console=console, redirect_stdout=False, redirect_stderr=False) as progress:
        yield _Bars(progress)


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Units finished per minute in this run (what is read back from the cache does not count)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed * 60:.1f}/min" if speed else "", style="progress.data.speed")

    return RateColumn()


def _print_table(report: dict[str, Any]) -> None:
    """The table on stdout: one optimizer's, or every comparison's (each optimizer vs original, then each pair)."""
    from rich.console import Console
    from rich.table import Table

    from ..eval.report import comparison_rows, table_columns, table_row

    if "optimizers" in report:
        s = report["optimizers"][0]["settings"]
        title = f"Optimizers on {s['target']['model']}, judged by {s['judge']['model']}"
        columns, rows = ["comparison", *table_columns("")], comparison_rows(report)
    else:
        s = report["settings"]
        title = f"BPO ({s['bpo']['model']}, {s['bpo']['mode']}) on {s['target']['model']}, judged by " \
                f"{s['judge']['model']}"
        columns, rows = table_columns("BPO"), [table_row(result) for result in report["results"]]
    table = Table(title=title)
    for column in columns:
        left = column in ("comparison", "data set")
        table.add_column(column, justify="left" if left else "right", overflow="fold" if left else "ellipsis")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 132).print(table)
