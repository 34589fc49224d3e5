"""The evaluation's three stages, each cached on disk so an interrupted run resumes where it stopped.

1. optimize every prompt with BPO (``Optimizer.optimize_many``);
2. answer the original and the optimized prompt with the target;
3. judge each pair of answers with the judge, in both orders.

``run_head_to_head`` then judges two optimizers' runs against each other: on each item, the answer to one's
rewrite against the answer to the other's, in both orders, with the same judge stage and cache.

A unit of work is keyed by everything its result depends on (the model's identity, the settings, the
texts), so changing any of them redoes only what it touches, and two pairs with the same text share
the work. Every stage keeps up to ``parallel`` units in flight (per server for a fleet; a local model decodes
them together) and caches each unit as it finishes, so a kill at any moment redoes nothing finished. A unit
that fails alone (a prompt too long for a context, a request a server refuses) is
reported on its pair and not cached; a target or judge that cannot be reached stops the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BpoLocalError
from ..targets import ChatSettings, ChatTarget, Message, user_message
from .cache import StageCache, cache_key
from .datasets import EvalItem
from .judge import (
    ORDERS,
    Order,
    Outcome,
    ParsedVerdict,
    bpo_outcome,
    combine,
    judge_messages,
    judge_prompt,
    parse_verdict,
)

if TYPE_CHECKING:
    from ..optimizer import Optimizer

STAGES = ("optimize", "answer", "judge")


@dataclass(frozen=True)
class EvalSettings:
    mode: str = "stable"
    seed: int = 0
    """BPO's seed (every prompt uses it)."""
    bpo_max_tokens: int | None = None
    """Caps BPO's rewrite; None keeps the mode's preset."""
    parallel: int = 4
    """Requests in flight per model (per server for a fleet of URLs), in every stage."""
    answer: ChatSettings = ChatSettings(max_tokens=1024, temperature=0.7, top_p=1.0, seed=0)
    """The paper's answer sampling: temperature 0.7, top-p 1.0."""
    judge: ChatSettings = ChatSettings(max_tokens=512, temperature=0.0, seed=0)


@dataclass
class StageCount:
    """Units of one stage: ``total`` = ``cached`` (found on disk) + ``computed`` (this run) + ``failed``."""

    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Judgment:
    text: str
    parsed: ParsedVerdict
    outcome: Outcome
    """What this order's verdict says for BPO."""


@dataclass(frozen=True)
class Pair:
    """One item's way through the stages; ``error`` says where and why it stopped, if it did."""

    item: EvalItem
    optimized: str | None = None
    answers: tuple[str, str] | None = None
    """(to the baseline, to the optimized prompt)."""
    judgments: tuple[Judgment, Judgment] | None = None
    """(baseline's answer as A, optimized's answer as A)."""
    error: str | None = None
    baseline: str | None = None
    """The prompt whose answer the optimized one's is judged against: None for the original, in a head-to-head
    the other optimizer's rewrite."""

    @property
    def outcome(self) -> Outcome | None:
        """The optimized prompt's win / tie / loss against the baseline, "invalid" without a verdict, None when not
        judged."""
        if self.judgments is None:
            return None
        return combine(self.judgments[0].outcome, self.judgments[1].outcome)


@dataclass
class EvalRun:
    pairs: list[Pair]
    stages: dict[str, StageCount] = field(default_factory=dict)


class Progress(Protocol):
    """How a face follows the run: ``start(stage, total, cached)``, ``advance(stage)`` per unit done now (in
    the order units finish), ``finish(stage, count)`` at the stage's end."""

    def start(self, stage: str, total: int, cached: int) -> None: ...

    def advance(self, stage: str) -> None: ...

    def finish(self, stage: str, count: StageCount) -> None: ...


class _Silent:
    def start(self, stage: str, total: int, cached: int) -> None:
        pass

    def advance(self, stage: str) -> None:
        pass

    def finish(self, stage: str, count: StageCount) -> None:
        pass


def bpo_identity(optimizer: Optimizer) -> str:
    """What BPO's rewrites depend on: the GGUF's sha256, or a server's kind, address and model id."""
    info = optimizer.info
    return f"gguf:{optimizer.model_sha256()}" if info.path is not None else f"{info.backend} {info.name}"


def run_eval(items: Sequence[EvalItem], optimizer: Optimizer, target: ChatTarget, judge: ChatTarget,
             settings: EvalSettings, cache_dir: Path, progress: Progress | None = None) -> EvalRun:
    """Run (or resume) the three stages over ``items``; the caches live in ``cache_dir``."""
    progress = progress or _Silent()
    caches = {stage: StageCache(cache_dir / f"{stage}.jsonl") for stage in STAGES}
    try:
        run = EvalRun([Pair(item) for item in items])
        run.stages["optimize"] = _optimize(run.pairs, optimizer, settings, caches["optimize"], progress)
        run.stages["answer"] = _answer(run.pairs, target, settings, caches["answer"], progress)
        run.stages["judge"] = _judge(run.pairs, judge, settings, caches["judge"], progress)
        return run
    finally:
        for cache in caches.values():
            cache.close()


def run_head_to_head(challenger: EvalRun, baseline: EvalRun, judge: ChatTarget, settings: EvalSettings,
                     cache_dir: Path, progress: Progress | None = None) -> EvalRun:
    """Judge (or resume judging) ``challenger``'s answers against ``baseline``'s, item by item, in both orders;
    each pair's outcome is the challenger's. Both runs cover the same items; the judgments share the judge
    stage's cache (a judgment is keyed by the judge, its settings and the two answers)."""
    pairs = [_duel(mine, theirs) for mine, theirs in zip(challenger.pairs, baseline.pairs, strict=True)]
    cache = StageCache(cache_dir / "judge.jsonl")
    try:
        run = EvalRun(pairs)
        run.stages["head-to-head"] = _judge(pairs, judge, settings, cache, progress or _Silent(), "head-to-head")
        return run
    finally:
        cache.close()


def _duel(mine: Pair, theirs: Pair) -> Pair:
    """One item's head-to-head pair: the answer to ``theirs``'s rewrite as the baseline of ``mine``'s."""
    pair = Pair(mine.item, optimized=mine.optimized, baseline=theirs.optimized)
    for side, other in (("first", mine), ("second", theirs)):
        if other.answers is None:
            return replace(pair, error=f"the {side} optimizer's {other.error or 'answer is missing'}")
    return replace(pair, answers=(theirs.answers[1], mine.answers[1]))  # type: ignore[index]


Outcomes = Iterator[tuple[str, "dict[str, Any] | BpoLocalError"]]
"""Each pending unit's key and the record to cache, or that unit's own error, as it finishes (in any order)."""


def _stage(name: str, keys: Iterable[str], cache: StageCache, progress: Progress, errors: dict[str, str],
           run: Callable[[list[str]], Outcomes]) -> StageCount:
    """Do the units ``keys`` names that are not yet in ``cache`` (``run(pending)``), caching each as it finishes;
    a unit's own failure goes to ``errors``. A failure of the whole model (TargetUnreachable) stops the stage."""
    keys = list(dict.fromkeys(keys))
    pending = [key for key in keys if key not in cache]
    count = StageCount(total=len(keys), cached=len(keys) - len(pending))
    progress.start(name, count.total, count.cached)
    outcomes = run(pending) if pending else iter(())
    try:
        for key, outcome in outcomes:
            if isinstance(outcome, BpoLocalError):
                errors[key] = str(outcome)
                count.failed += 1
            else:
                cache.put(key, outcome)
                count.computed += 1
            progress.advance(name)
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()
    progress.finish(name, count)
    return count


def _optimize(pairs: list[Pair], optimizer: Optimizer, settings: EvalSettings, cache: StageCache,
              progress: Progress) -> StageCount:
    overrides = {} if settings.bpo_max_tokens is None else {"max_tokens": settings.bpo_max_tokens}
    model = bpo_identity(optimizer)
    keys = [cache_key(stage="optimize", model=model, mode=settings.mode, seed=settings.seed, prompt=p.item.prompt,
                      **overrides) for p in pairs]
    prompts = dict(zip(keys, (p.item.prompt for p in pairs)))  # one unit per distinct prompt

    def run(pending: list[str]) -> Outcomes:
        results = optimizer.optimize_many((prompts[k] for k in pending), parallel=settings.parallel,
                                          mode=settings.mode, seed=settings.seed, **overrides)
        try:
            for key, result in zip(pending, results):
                yield key, result if isinstance(result, BpoLocalError) else \
                    {"optimized": result.text, "candidates": list(result.candidates)}
        finally:
            results.close()

    errors: dict[str, str] = {}
    count = _stage("optimize", keys, cache, progress, errors, run)
    for i, key in enumerate(keys):
        record = cache.get(key)
        pairs[i] = replace(pairs[i], optimized=record["optimized"]) if record else \
            replace(pairs[i], error=f"optimize: {errors[key]}")
    return count


def _answer(pairs: list[Pair], target: ChatTarget, settings: EvalSettings, cache: StageCache,
            progress: Progress) -> StageCount:
    identity, chat = target.identity(), settings.answer

    def key(prompt: str) -> str:
        return cache_key(stage="answer", target=identity, settings=_fields(chat), prompt=prompt)

    units: dict[str, list[Message]] = {}
    for pair in _ready(pairs, lambda p: p.optimized is not None):
        for prompt in (pair.item.prompt, pair.optimized):
            units[key(prompt)] = user_message(prompt)  # type: ignore[arg-type]
    errors: dict[str, str] = {}
    count = _stage("answer", units, cache, progress, errors, _answering(target, units, chat, settings.parallel))
    for i, pair in enumerate(pairs):
        if pair.optimized is None:
            continue
        keys = key(pair.item.prompt), key(pair.optimized)
        failed = [errors[k] for k in keys if k in errors]
        pairs[i] = replace(pair, error=f"answer: {failed[0]}") if failed else \
            replace(pair, answers=(_text(cache, keys[0]), _text(cache, keys[1])))
    return count


def _judge(pairs: list[Pair], judge: ChatTarget, settings: EvalSettings, cache: StageCache,
           progress: Progress, stage: str = "judge") -> StageCount:
    identity, prompt_name, chat = judge.identity(), judge_prompt()["name"], settings.judge

    def conversations(pair: Pair) -> list[tuple[str, list[Message]]]:
        original, optimized = pair.answers  # type: ignore[misc]
        out = []
        for a, b in ((original, optimized), (optimized, original)):
            messages = judge_messages(pair.item.prompt, a, b)
            out.append((cache_key(stage="judge", judge=identity, prompt=prompt_name, settings=_fields(chat),
                                  messages=messages), messages))
        return out

    units = dict(item for pair in _ready(pairs, lambda p: p.answers is not None) for item in conversations(pair))
    errors: dict[str, str] = {}
    count = _stage(stage, units, cache, progress, errors, _answering(judge, units, chat, settings.parallel))
    for i, pair in enumerate(pairs):
        if pair.answers is None:
            continue
        keys = [key for key, _ in conversations(pair)]
        failed = [errors[k] for k in keys if k in errors]
        if failed:
            pairs[i] = replace(pair, error=f"judge: {failed[0]}")
        else:
            first, second = (_judgment(_text(cache, k), order) for k, order in zip(keys, ORDERS))
            pairs[i] = replace(pair, judgments=(first, second))
    return count


def _ready(pairs: Iterable[Pair], ok: Callable[[Pair], bool]) -> list[Pair]:
    return [pair for pair in pairs if pair.error is None and ok(pair)]


def _answering(model: ChatTarget, units: dict[str, list[Message]], settings: ChatSettings,
               parallel: int) -> Callable[[list[str]], Outcomes]:
    """How a stage runs its pending units: ``model`` answers their conversations, ``parallel`` at a time."""
    def run(pending: list[str]) -> Outcomes:
        answers = model.complete_many([units[key] for key in pending], settings, parallel=parallel)
        try:
            for index, answer in answers:
                yield pending[index], answer if isinstance(answer, BpoLocalError) else \
                    {"text": answer.text, "finish_reason": answer.finish_reason}
        finally:
            answers.close()  # type: ignore[attr-defined]

    return run


def _text(cache: StageCache, key: str) -> str:
    return cache.get(key)["text"]  # type: ignore[index]


def _judgment(text: str, order: Order) -> Judgment:
    parsed = parse_verdict(text)
    return Judgment(text, parsed, bpo_outcome(parsed.verdict, order))


def _fields(settings: ChatSettings) -> dict[str, Any]:
    return {"max_tokens": settings.max_tokens, "temperature": settings.temperature, "top_p": settings.top_p,
            "seed": settings.seed}
