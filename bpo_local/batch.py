"""Batch optimization of many prompts: JSONL or plain-text input, one record out per input, resumable.

Input formats:

- ``jsonl``: one JSON object per line. The prompt is the first non-empty string among the keys
  ``prompt, instruction, input, query, text`` (BPO's test set uses ``prompt``). A whole-file JSON array of
  objects is accepted too (items are numbered 1, 2, ... like lines). Blank lines are skipped.
- ``lines``: plain text, one prompt per line. Blank lines produce no record.

Prompts are stripped of surrounding whitespace before optimizing; records keep the input as it was.

Each input is identified by its line number and ``input_sha256`` (the first 16 hex digits of the sha256
of the line's bytes). Each output record is the input object (``{"prompt": line}`` for plain lines) plus
``optimized_prompt``, ``candidates`` (when a mode yields several), ``line`` and ``input_sha256``; keys
written here replace input keys of the same name. An input that cannot be optimized gets
``{"line": N, "input_sha256": ..., "error": "..."}`` and the batch goes on.

``ResumableOutput`` appends records to a file, one fsynced line each, and on reopening skips the inputs
already answered there, dropping a torn last line left by a killed run: nothing is lost or duplicated.
Nothing here knows about llama.cpp: ``process`` takes any ``prompts -> results in order`` function.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from .errors import BpoLocalError, ResumeUnreadable, UsageError
from .journal import Journal
from .optimizer import OptimizeResult

Format = Literal["jsonl", "lines"]
PROMPT_KEYS = ("prompt", "instruction", "input", "query", "text")


@dataclass(frozen=True)
class BatchItem:
    """One input: where it came from, its parsed record, and its prompt or why it has none."""

    line: int
    digest: str
    record: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    error: str | None = None


def read_items(data: bytes, fmt: Format) -> list[BatchItem]:
    """Split raw input into items; a malformed one carries its ``error`` instead of a prompt."""
    if fmt == "jsonl" and data.lstrip()[:1] == b"[":
        return _array_items(data)
    items = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        items.append(_line_item(number, raw, fmt))
    return items


def _line_item(number: int, raw: bytes, fmt: Format) -> BatchItem:
    digest = _digest(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BatchItem(number, digest, error=f"line is not valid UTF-8 (byte {exc.start + 1})")
    if fmt == "lines":
        return BatchItem(number, digest, {"prompt": text}, prompt=text.strip())
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchItem(number, digest, error=f"not valid JSON: {exc.msg} at column {exc.colno}")
    return _record_item(number, digest, record)


def _array_items(data: bytes) -> list[BatchItem]:
    try:
        array = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"input starts with '[' but is not a valid UTF-8 JSON array ({exc}); fix the file or give JSONL") from exc
    if not isinstance(array, list):
        raise UsageError("input is a JSON value, not an array of objects; give JSONL or a JSON array")
    return [
        _record_item(index, _digest(json.dumps(item, sort_keys=True, ensure_ascii=False).encode()), item)
        for index, item in enumerate(array, start=1)
    ]


def _record_item(number: int, digest: str, record: object) -> BatchItem:
    if not isinstance(record, dict):
        return BatchItem(number, digest, error=f"expected a JSON object, got {type(record).__name__}")
    prompt = next((record[k] for k in PROMPT_KEYS if isinstance(record.get(k), str) and record[k].strip()), None)
    if prompt is None:
        return BatchItem(number, digest, record, error=f"no prompt: give a non-empty string under one of {', '.join(PROMPT_KEYS)}")
    return BatchItem(number, digest, record, prompt=prompt.strip())


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def answer_record(item: BatchItem, result: OptimizeResult) -> dict[str, Any]:
    """The input record plus the optimized prompt (and every candidate when there are several)."""
    out = dict(item.record)
    out["optimized_prompt"] = result.text
    if len(result.candidates) > 1:
        out["candidates"] = list(result.candidates)
    out["line"], out["input_sha256"] = item.line, item.digest
    return out


def error_record(item: BatchItem, message: str) -> dict[str, Any]:
    return {"line": item.line, "input_sha256": item.digest, "error": message}


class Sink(Protocol):
    """Where ``process`` puts each item's outcome."""

    def answer(self, item: BatchItem, result: OptimizeResult) -> None: ...

    def fail(self, item: BatchItem, message: str) -> None: ...


OptimizeMany = Callable[[Iterable[str]], Generator[OptimizeResult | BpoLocalError, None, None]]
"""Prompts in, one result (or that prompt's error) out per prompt, in input order: ``Optimizer.optimize_many``."""


def process(
    items: Iterable[BatchItem],
    optimize_many: OptimizeMany,
    sink: Sink,
    on_item: Callable[[BatchItem, OptimizeResult | None], None] | None = None,
    describe: Callable[[BpoLocalError], str] = str,
) -> int:
    """Optimize the items' prompts (several in flight, as ``optimize_many`` schedules them) and hand
    each item's outcome to the sink in input order, as soon as it and every earlier one are done.

    A failure of one item is recorded and the batch goes on; returns how many failed.
    ``on_item(item, result_or_None)`` runs after each item is written (progress, logging). Ctrl-C
    propagates: items written before it are in the sink; those in flight are cancelled and left for
    a resumed run. ``describe`` words an item's error (a face passes its own, with its advice).
    """
    items = list(items)
    failed = 0
    results = optimize_many(item.prompt for item in items if item.prompt is not None)
    try:
        for item in items:
            outcome = next(results) if item.prompt is not None else None
            if isinstance(outcome, OptimizeResult):
                sink.answer(item, outcome)
            else:
                sink.fail(item, describe(outcome) if outcome is not None else item.error or "no prompt")
                failed += 1
            if on_item is not None:
                on_item(item, outcome if isinstance(outcome, OptimizeResult) else None)
    finally:
        results.close()
    return failed


class ResumableOutput:
    """A JSONL output file that survives being killed: appended and fsynced one record at a time.

    Opening it reads the records already there (the last one per input line counts), truncates a torn
    last line, and takes an exclusive lock so two runs cannot interleave. ``pending(items)`` yields the
    items still to do: those without a record and those whose record is an error (a failure is work not
    done, whether or not its line changed since), after checking that every answered line is unchanged.
    Closing puts the records back in input order, one per line, if a redone failure left them otherwise.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[int, dict[str, Any]] = {}
        """Input line -> its latest record."""
        self._in_order, self._last = True, 0
        try:
            self._journal = Journal(path, lock=True)
        except OSError as exc:
            raise ResumeUnreadable(path, str(exc.strerror)) from exc
        for number, record in self._journal.records():
            if not isinstance(record, dict) or not {"line", "input_sha256"} <= record.keys():
                self._journal.close()
                raise UsageError(
                    f"{path} line {number} is not a bpo-local batch record; resume into the file a batch wrote, or a new one"
                )
            self._keep(record)

    @property
    def failed(self) -> int:
        """How many inputs have an error record."""
        return sum("error" in record for record in self.records.values())

    def pending(self, items: Iterable[BatchItem]) -> Iterator[BatchItem]:
        items = list(items)
        for item in items:
            record = self.records.get(item.line)
            if record is not None and "error" not in record and record["input_sha256"] != item.digest:
                raise UsageError(
                    f"{self.path} answers a different input (line {item.line} changed); use a new output file"
                )
        return (item for item in items if item.line not in self.records or "error" in self.records[item.line])

    def answer(self, item: BatchItem, result: OptimizeResult) -> None:
        self.write(answer_record(item, result))

    def fail(self, item: BatchItem, message: str) -> None:
        self.write(error_record(item, message))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable before returning."""
        self._journal.append(record)
        self._keep(record)

    def _keep(self, record: dict[str, Any]) -> None:
        line = record["line"]
        self._in_order, self._last = self._in_order and line > self._last, max(self._last, line)
        self.records[line] = record

    def close(self) -> None:
        if not self._in_order:
            self._journal.replace([self.records[line] for line in sorted(self.records)])
        self._journal.close()

    def __enter__(self) -> ResumableOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
