"""Evaluation data sets: BPO's four test sets, shipped with the package, or a file of the same shapes.

A file is a JSON array of objects or JSONL. An item's prompt (what BPO rewrites, the target answers and
the judge sees as the user's question) is ``instruction`` + newline + ``context``, stripped, when the item
has an instruction (Dolly, Self-Instruct), else its first non-empty ``prompt``, ``text``, ``question``,
``query`` or ``input``; its id is its ``idx``, ``id`` or ``question_id``, else its position from 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import UsageError

SHIPPED = {
    "vicuna_eval": "vicuna_eval.jsonl",
    "dolly_eval": "dolly_eval.json",
    "self_instruct_eval": "self_instruct_eval.json",
    "bpo_test": "bpo_test.json",
}
"""Name -> file in ``bpo_local/data`` (see its README for source and licence)."""

PROMPT_KEYS = ("prompt", "text", "question", "query", "input")
ID_KEYS = ("idx", "id", "question_id")


@dataclass(frozen=True)
class EvalItem:
    dataset: str
    id: str
    prompt: str


@dataclass(frozen=True)
class Dataset:
    name: str
    items: tuple[EvalItem, ...]


def load_dataset(source: str, limit: int | None = None) -> Dataset:
    """The shipped set named ``source``, or the file at that path; its first ``limit`` items."""
    if source in SHIPPED:
        name, text = source, files("bpo_local.data").joinpath(SHIPPED[source]).read_text(encoding="utf-8")
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"no data set {source!r}: not one of {', '.join(SHIPPED)}, and the file cannot be "
                             f"read ({reason})") from exc
        name = path.stem
    records = _records(text, source)
    items = tuple(_item(name, n, record, source) for n, record in enumerate(records[:limit], start=1))
    if not items:
        raise UsageError(f"data set {source} holds no items")
    return Dataset(name, items)


def _records(text: str, source: str) -> list[Any]:
    try:
        if text.lstrip().startswith("["):
            array = json.loads(text)
            return array if isinstance(array, list) else [array]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"data set {source} is neither a JSON array nor JSONL: {exc.msg} at line {exc.lineno}") \
            from exc


def _item(dataset: str, position: int, record: Any, source: str) -> EvalItem:
    prompt = _prompt(record) if isinstance(record, dict) else None
    if not prompt:
        raise UsageError(f"data set {source} item {position} has no prompt: give a string under instruction "
                         f"(and context) or one of {', '.join(PROMPT_KEYS)}")
    ident = next((record[k] for k in ID_KEYS if k in record), position)
    return EvalItem(dataset, str(ident), prompt)


def _prompt(record: dict[str, Any]) -> str | None:
    instruction = record.get("instruction")
    if isinstance(instruction, str) and instruction.strip():
        context = record.get("context")
        return (instruction + "\n" + (context if isinstance(context, str) else "")).strip()
    return next((record[k].strip() for k in PROMPT_KEYS if isinstance(record.get(k), str) and record[k].strip()), None)
