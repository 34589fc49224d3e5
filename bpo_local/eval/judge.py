"""The pairwise judge: the paper's pair-v2 prompt, its verdicts, and the two orders combined.

The prompt is BPO's copy of FastChat's ``pair-v2`` (``bpo_local/data/judge_pair_v2.json``): an impartial
judge compares assistant A and B, explains, and ends with ``[[A]]``, ``[[B]]`` or ``[[C]]`` (a tie).

Parsing: a verdict is a ``[[A]]``/``[[B]]``/``[[C]]`` marker (any case, spaces inside allowed). As the
paper's scorer does, the last paragraph is read first; if it holds exactly one kind of marker, that is the
verdict; otherwise the whole text must hold exactly one kind. No marker, or markers of different kinds
(e.g. the judge echoing the format before its answer, in the same paragraph), is no verdict: counted and
reported, never guessed.

Each pair is judged twice, the original's answer as A and then as B. The two verdicts, read as BPO's
win / tie / loss, combine as FastChat's pairwise evaluation does: the same outcome twice is that outcome;
two different ones (the verdict flipped with the order) are a tie; a missing verdict makes the pair invalid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Literal

from ..targets import Message

Verdict = Literal["A", "B", "C"]
Outcome = Literal["win", "tie", "loss", "invalid"]
Order = Literal["original_first", "optimized_first"]
ORDERS: tuple[Order, Order] = ("original_first", "optimized_first")

_MARKER = re.compile(r"\[\[\s*([abc])\s*\]\]", re.IGNORECASE)


@cache
def judge_prompt() -> dict[str, str]:
    """``name``, ``system_prompt`` and ``prompt_template`` (with {question}, {answer_a}, {answer_b})."""
    return json.loads(files("bpo_local.data").joinpath("judge_pair_v2.json").read_text(encoding="utf-8"))


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[Message]:
    prompt = judge_prompt()
    # One pass, so an answer quoting "{answer_b}" is not substituted into.
    fields = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
    user = re.sub(r"\{(question|answer_a|answer_b)\}", lambda m: fields[m.group(1)], prompt["prompt_template"])
    return [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class ParsedVerdict:
    verdict: Verdict | None
    problem: str | None = None
    """Why there is no verdict: "no verdict" or "conflicting verdicts [[A]] [[B]]"."""


def parse_verdict(text: str) -> ParsedVerdict:
    """The judge's verdict in ``text`` (see the module's rules)."""
    last = _kinds(text.strip().split("\n\n")[-1])
    if len(last) == 1:
        return ParsedVerdict(last[0])
    kinds = _kinds(text)
    if len(kinds) == 1:
        return ParsedVerdict(kinds[0])
    if not kinds:
        return ParsedVerdict(None, "no verdict")
    return ParsedVerdict(None, "conflicting verdicts " + " ".join(f"[[{k}]]" for k in kinds))


def _kinds(text: str) -> list[Verdict]:
    return sorted({m.upper() for m in _MARKER.findall(text)})  # type: ignore[misc]


def bpo_outcome(verdict: Verdict | None, order: Order) -> Outcome:
    """What ``verdict`` says about the optimized prompt's answer, given which answer was A."""
    if verdict is None:
        return "invalid"
    if verdict == "C":
        return "tie"
    optimized_is = "B" if order == "original_first" else "A"
    return "win" if verdict == optimized_is else "loss"


def combine(first: Outcome, second: Outcome) -> Outcome:
    """One pair's outcome from its two orders."""
    if "invalid" in (first, second):
        return "invalid"
    return first if first == second else "tie"
