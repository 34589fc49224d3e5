"""The paper's table from judged pairs: BPO win / tie / loss rates with seeded 95% bootstrap intervals,
per data set; and the report as JSON and as Markdown with every pair.

Rates are shares of the judged pairs, pairs without a verdict ("invalid") included, so the four add up
to 100%; pairs that failed before judging are counted as errors, outside the rates. Position consistency
is the share of pairs with both verdicts whose two orders give the same outcome.

Comparing optimizers, each one's report against the original prompts and, for every two of them (A, B), a
head-to-head report (A's answers against B's; the rates are A's) make one comparison (``comparison_dict``):
one table (``comparison_rows``) and one Markdown document (``render_comparison``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .judge import ORDERS, Outcome
from .pipeline import EvalRun, EvalSettings, Pair

if TYPE_CHECKING:
    from ..targets import ChatSettings

OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "loss", "invalid")
RESAMPLES = 1000
"""Bootstrap resamples per interval."""
ORIGINAL_SIDES = ("original", "optimized")
HEAD_TO_HEAD_SIDES = ("b", "a")
"""A pair's JSON names for (the baseline, the optimized prompt), against the original or head to head."""


@dataclass(frozen=True)
class Rate:
    value: float
    low: float
    high: float
    """The 95% bootstrap interval."""

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


@dataclass(frozen=True)
class Summary:
    dataset: str
    items: int
    judged: int
    counts: dict[str, int]
    """Pairs per outcome (win, tie, loss, invalid)."""
    rates: dict[str, Rate]
    consistency: float | None
    unparseable: int
    """Verdicts (two per judged pair) in which no verdict could be read."""
    empty_rewrites: int
    """Pairs whose optimized prompt BPO left empty (answered as they are)."""
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "items": self.items, "judged": self.judged, "errors": self.errors,
            **self.counts,
            "rates": {k: {"rate": r.value, "ci95": [r.low, r.high]} for k, r in self.rates.items()},
            "position_consistency": self.consistency, "unparseable_verdicts": self.unparseable,
            "empty_rewrites": self.empty_rewrites,
        }


def summarize(pairs: list[Pair], seed: int) -> list[Summary]:
    """One summary per data set, in order of appearance, and one over all of them when there are several."""
    names = list(dict.fromkeys(pair.item.dataset for pair in pairs))
    groups = [(name, [p for p in pairs if p.item.dataset == name]) for name in names]
    if len(groups) > 1:
        groups.append(("all", pairs))
    return [_summary(name, group, seed) for name, group in groups]


def _summary(name: str, pairs: list[Pair], seed: int) -> Summary:
    judged = [p for p in pairs if p.judgments is not None]
    outcomes = [p.outcome for p in judged]
    both = [p for p in judged if p.outcome != "invalid"]
    consistent = sum(p.judgments[0].outcome == p.judgments[1].outcome for p in both)  # type: ignore[index]
    return Summary(
        dataset=name, items=len(pairs), judged=len(judged),
        counts={o: outcomes.count(o) for o in OUTCOMES},
        rates=bootstrap(outcomes, seed),  # type: ignore[arg-type]
        consistency=consistent / len(both) if both else None,
        unparseable=sum(j.parsed.verdict is None for p in judged for j in p.judgments),  # type: ignore[union-attr]
        empty_rewrites=sum(p.optimized == "" for p in pairs),
        errors=sum(p.error is not None for p in pairs),
    )


def bootstrap(outcomes: list[str], seed: int, resamples: int = RESAMPLES) -> dict[str, Rate]:
    """Each outcome's share of ``outcomes`` with a percentile 95% interval over seeded resamples."""
    import numpy as np

    if not outcomes:
        return {}
    codes = np.array([OUTCOMES.index(o) for o in outcomes])  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    samples = codes[rng.integers(0, len(codes), size=(resamples, len(codes)))]
    rates: dict[str, Rate] = {}
    for code, name in enumerate(OUTCOMES):
        shares = (samples == code).mean(axis=1)
        low, high = np.percentile(shares, [2.5, 97.5])
        rates[name] = Rate(float((codes == code).mean()), float(low), float(high))
    return rates


def run_settings(bpo: str, target: str, judge: str, settings: EvalSettings, data: list[str],
                 limit: int | None) -> dict[str, Any]:
    """The models and settings a report states."""
    from .judge import judge_prompt

    return {
        "bpo": {"model": bpo, "mode": settings.mode, "seed": settings.seed, "max_tokens": settings.bpo_max_tokens},
        "target": {"model": target, **_chat(settings.answer)},
        "judge": {"model": judge, "prompt": judge_prompt()["name"], "orders": list(ORDERS), **_chat(settings.judge)},
        "data": data, "limit": limit, "bootstrap": {"resamples": RESAMPLES, "seed": settings.seed, "interval": 0.95},
    }


def head_to_head_settings(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """What a head-to-head report states, from the two optimizers' ``run_settings``: optimizer ``a`` (whose
    win / tie / loss the rates are), optimizer ``b``, and the target, judge and data they share."""
    shared = {k: v for k, v in first.items() if k != "bpo"}
    judge = {**shared["judge"], "orders": [f"{side}_first" for side in HEAD_TO_HEAD_SIDES]}
    return {"a": first["bpo"], "b": second["bpo"], **shared, "judge": judge}


def optimizer_label(bpo: dict[str, Any]) -> str:
    """An optimizer's name in tables: its preset and model."""
    return f"{bpo['mode']} ({bpo['model']})"


def comparison_label(settings: dict[str, Any]) -> str:
    """What a report compares: "stable (bpo.gguf) vs original", or optimizer a vs b."""
    if "a" in settings:
        return f"{optimizer_label(settings['a'])} vs {optimizer_label(settings['b'])}"
    return f"{optimizer_label(settings['bpo'])} vs original"


def _sides(settings: dict[str, Any]) -> tuple[str, str]:
    return HEAD_TO_HEAD_SIDES if "a" in settings else ORIGINAL_SIDES


def _chat(settings: ChatSettings) -> dict[str, Any]:
    return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens,
            "seed": settings.seed}


def report_dict(run: EvalRun, summaries: list[Summary], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole report, JSON-ready: settings, the table, what each stage did, and every pair."""
    return {
        "settings": meta,
        "results": [s.to_dict() for s in summaries],
        "stages": {name: vars(count) for name, count in run.stages.items()},
        "pairs": [_pair_dict(p, _sides(meta)) for p in run.pairs],
    }


def comparison_dict(optimizers: Sequence[dict[str, Any]], head_to_head: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report of several optimizers: each one's ``report_dict`` against the original, then each head-to-head."""
    return {"optimizers": list(optimizers), "head_to_head": list(head_to_head)}


def _pair_dict(pair: Pair, sides: tuple[str, str]) -> dict[str, Any]:
    """A pair as JSON; ``sides`` names (the baseline, the optimized prompt)."""
    baseline, optimized = sides
    rewrites = {f"{optimized}_prompt": pair.optimized}
    if sides != ORIGINAL_SIDES:
        rewrites[f"{baseline}_prompt"] = pair.baseline
    out: dict[str, Any] = {"dataset": pair.item.dataset, "id": pair.item.id, "prompt": pair.item.prompt, **rewrites,
                           "outcome": pair.outcome, "error": pair.error}
    if pair.answers is not None:
        out["answers"] = dict(zip(sides, pair.answers))
    if pair.judgments is not None:
        out["judgments"] = {f"{side}_first": {"verdict": j.parsed.verdict, "problem": j.parsed.problem,
                                              "outcome": j.outcome, "text": j.text}
                            for side, j in zip(sides, pair.judgments)}
    return out


@dataclass(frozen=True)
class _Names:
    """How a report's Markdown names its sides."""

    title: str
    optimizers: tuple[tuple[str, dict[str, Any]], ...]
    """(name, settings) of each optimizer."""
    winner: str
    """Whose win / tie / loss the rates are."""
    rewrites: tuple[tuple[str, str], ...]
    """(title, pair key) of each rewrite shown."""
    answered: tuple[str, str]
    """What (the baseline's, the optimized) answer answered."""
    judged: tuple[str, str]
    """Whose answer is A in each order."""


def _names(settings: dict[str, Any]) -> _Names:
    if "a" not in settings:
        original = ("the original", "the optimized")
        return _Names("BPO evaluation", (("BPO", settings["bpo"]),), "BPO", (("BPO's rewrite", "optimized_prompt"),),
                      original, original)
    a, b = optimizer_label(settings["a"]), optimizer_label(settings["b"])
    rewrites = ((f"{a}'s rewrite", "a_prompt"), (f"{b}'s rewrite", "b_prompt"))
    return _Names(f"Head to head: {a} vs {b}", ((a, settings["a"]), (b, settings["b"])), a, rewrites,
                  (f"{b}'s rewrite", f"{a}'s rewrite"), (b, a))


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown report of ``report_dict``'s output: settings, the table, then every pair in full."""
    s, names = report["settings"], _names(report["settings"])
    lines = [f"# {names.title}", "",
             *(f"- {who}: `{bpo['model']}`, {bpo['mode']} mode, seed {bpo['seed']}" for who, bpo in names.optimizers),
             *_shared_lines(s), "", *_markdown_table(table_columns(names.winner), map(table_row, report["results"]))]
    lines += [f"\n{r['dataset']}: BPO left {r['empty_rewrites']} rewrite(s) empty; they were answered as they are."
              for r in report["results"] if r["empty_rewrites"] and r["dataset"] != "all" and "bpo" in s]
    lines += ["", "Stages: " + "; ".join(f"{name} {c['total']} ({c['cached']} cached, {c['computed']} computed, "
                                        f"{c['failed']} failed)" for name, c in report["stages"].items()), ""]
    for pair in report["pairs"]:
        lines += _pair_markdown(pair, names, _sides(s))
    return "\n".join(lines) + "\n"


def render_comparison(report: dict[str, Any]) -> str:
    """``comparison_dict``'s output as one Markdown document: the table of every comparison, then each report."""
    first = report["optimizers"][0]["settings"]
    lines = ["# Optimizer comparison", "", *_shared_lines(first), "",
             *_markdown_table(["comparison", *table_columns("")], comparison_rows(report)), "",
             "Each row gives the first-named side's win / tie / loss; every comparison has its section below.", ""]
    return "\n".join(lines) + "\n" + "\n".join(map(render_markdown, [*report["optimizers"], *report["head_to_head"]]))


def _shared_lines(s: dict[str, Any]) -> list[str]:
    """The settings every comparison of one run shares: target, judge, data, intervals."""
    return [
        f"- target: `{s['target']['model']}` ({_settings_text(s['target'])})",
        f"- judge: `{s['judge']['model']}`, {s['judge']['prompt']} prompt in both orders "
        f"({_settings_text(s['judge'])})",
        f"- data: {', '.join(s['data'])}" + (f", first {s['limit']} of each" if s["limit"] else ""),
        f"- intervals: 95% bootstrap, {s['bootstrap']['resamples']} resamples, seed {s['bootstrap']['seed']}",
    ]


def _markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(columns), "|" + "---|" * len(columns), *map(line, rows)]


def table_columns(winner: str) -> list[str]:
    """The table's columns; ``winner`` names whose win and loss the rates are ("" in a table of comparisons)."""
    return ["data set", "pairs", "judged", f"{winner} win".strip(), "tie", f"{winner} loss".strip(), "no verdict",
            "consistency", "errors"]


def comparison_rows(report: dict[str, Any]) -> list[list[str]]:
    """``comparison_dict``'s table: each optimizer against the original, then each head-to-head, per data set."""
    return [[comparison_label(each["settings"]), *table_row(result)]
            for each in [*report["optimizers"], *report["head_to_head"]] for result in each["results"]]


def table_row(result: dict[str, Any]) -> list[str]:
    """One data set's row of the table (the terminal's and the Markdown's)."""
    def rate(name: str) -> str:
        r = result["rates"].get(name)
        return str(Rate(r["rate"], *r["ci95"])) if r else "-"

    consistency = result["position_consistency"]
    return [result["dataset"], str(result["items"]), str(result["judged"]), rate("win"), rate("tie"), rate("loss"),
            f"{result['invalid']} ({result['unparseable_verdicts']} verdicts)",
            "-" if consistency is None else f"{100 * consistency:.1f}%", str(result["errors"])]


def _settings_text(model: dict[str, Any]) -> str:
    return f"temperature {model['temperature']}, top-p {model['top_p']}, up to {model['max_tokens']} tokens, " \
           f"seed {model['seed']}"


def _pair_markdown(pair: dict[str, Any], names: _Names, sides: tuple[str, str]) -> list[str]:
    lines = [f"## {pair['dataset']} {pair['id']}: {pair['outcome'] or 'not judged'}", ""]
    sections = [("Prompt", pair["prompt"]), *((title, pair[key]) for title, key in names.rewrites)]
    if "answers" in pair:
        sections += [(f"Answer to {what}", pair["answers"][side]) for what, side in zip(names.answered, sides)]
    for who, j in zip(names.judged, pair.get("judgments", {}).values()):
        verdict = f"[[{j['verdict']}]]" if j["verdict"] else j["problem"]
        sections.append((f"Judge, {who}'s answer as A: {verdict}, {names.winner} {j['outcome']}", j["text"]))
    if pair["error"]:
        sections.append(("Error", pair["error"]))
    for title, text in sections:
        if text is not None:
            lines += [f"### {title}", "", *_fenced(text), ""]
    return lines


def _fenced(text: str) -> list[str]:
    """``text`` verbatim in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", text, fence]
