"""The paper's table from judged pairs: BPO win / tie / loss rates with seeded 95% bootstrap intervals,
per data set; and the report as JSON and as Markdown with every pair.

Rates are shares of the judged pairs, pairs without a verdict ("invalid") included, so the four add up
to 100%; pairs that failed before judging are counted as errors, outside the rates. Position consistency
is the share of pairs with both verdicts whose two orders give the same outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .judge import ORDERS, Outcome
from .pipeline import EvalRun, EvalSettings, Pair

if TYPE_CHECKING:
    from ..targets import ChatSettings

OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "loss", "invalid")
RESAMPLES = 1000
"""Bootstrap resamples per interval."""


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


def _chat(settings: ChatSettings) -> dict[str, Any]:
    return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens,
            "seed": settings.seed}


def report_dict(run: EvalRun, summaries: list[Summary], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole report, JSON-ready: settings, the table, what each stage did, and every pair."""
    return {
        "settings": meta,
        "results": [s.to_dict() for s in summaries],
        "stages": {name: vars(count) for name, count in run.stages.items()},
        "pairs": [_pair_dict(p) for p in run.pairs],
    }


def _pair_dict(pair: Pair) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": pair.item.dataset, "id": pair.item.id, "prompt": pair.item.prompt,
                           "optimized_prompt": pair.optimized, "outcome": pair.outcome, "error": pair.error}
    if pair.answers is not None:
        out["answers"] = {"original": pair.answers[0], "optimized": pair.answers[1]}
    if pair.judgments is not None:
        out["judgments"] = {order: {"verdict": j.parsed.verdict, "problem": j.parsed.problem, "outcome": j.outcome,
                                    "text": j.text} for order, j in zip(ORDERS, pair.judgments)}
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown report of ``report_dict``'s output: settings, the table, then every pair in full."""
    s = report["settings"]
    lines = [
        "# BPO evaluation", "",
        f"- BPO: `{s['bpo']['model']}`, {s['bpo']['mode']} mode, seed {s['bpo']['seed']}",
        f"- target: `{s['target']['model']}` ({_settings_text(s['target'])})",
        f"- judge: `{s['judge']['model']}`, {s['judge']['prompt']} prompt in both orders "
        f"({_settings_text(s['judge'])})",
        f"- data: {', '.join(s['data'])}" + (f", first {s['limit']} of each" if s["limit"] else ""),
        f"- intervals: 95% bootstrap, {s['bootstrap']['resamples']} resamples, seed {s['bootstrap']['seed']}", "",
        "| data set | pairs | judged | BPO win | tie | BPO loss | no verdict | consistency | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append("| " + " | ".join(table_row(r)) + " |")
    lines += [f"\n{r['dataset']}: BPO left {r['empty_rewrites']} rewrite(s) empty; they were answered as they are."
              for r in report["results"] if r["empty_rewrites"] and r["dataset"] != "all"]
    lines += ["", "Stages: " + "; ".join(f"{name} {c['total']} ({c['cached']} cached, {c['computed']} computed, "
                                        f"{c['failed']} failed)" for name, c in report["stages"].items()), ""]
    for pair in report["pairs"]:
        lines += _pair_markdown(pair)
    return "\n".join(lines) + "\n"


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


_TITLES = {"original_first": "Judge, the original's answer as A",
           "optimized_first": "Judge, the optimized's answer as A"}


def _pair_markdown(pair: dict[str, Any]) -> list[str]:
    lines = [f"## {pair['dataset']} {pair['id']}: {pair['outcome'] or 'not judged'}", ""]
    sections = [("Prompt", pair["prompt"]), ("BPO's rewrite", pair["optimized_prompt"])]
    if "answers" in pair:
        sections += [("Answer to the original", pair["answers"]["original"]),
                     ("Answer to the optimized", pair["answers"]["optimized"])]
    for order, j in pair.get("judgments", {}).items():
        verdict = f"[[{j['verdict']}]]" if j["verdict"] else j["problem"]
        sections.append((f"{_TITLES[order]}: {verdict}, BPO {j['outcome']}", j["text"]))
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
