"""What a REPL session holds: the settings the user chose, the turns so far, and their export."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_text_atomic
from ..errors import UsageError
from ..presets import Overrides

if TYPE_CHECKING:
    from ..optimizer import OptimizeResult


@dataclass
class Settings:
    """The mode plus the user's overrides (``presets.Overrides``: one set of names and ranges)."""

    mode: str = "stable"
    overrides: Overrides = field(default_factory=Overrides)

    def set(self, name: str, value: int | float | None) -> None:
        """Override ``name`` (an Overrides field) with ``value``, checked; None goes back to the preset's."""
        self.overrides = replace(self.overrides, **{name: value})


@dataclass(frozen=True)
class Comparison:
    """A target model's answers to the original and to the optimized prompt."""

    target: str
    original_answer: str
    optimized_answer: str


@dataclass
class Turn:
    result: OptimizeResult
    picked: int = 0
    comparison: Comparison | None = None

    @property
    def chosen(self) -> str:
        """The optimized prompt the user settled on (the first, or the one ``/pick`` chose)."""
        return self.result.candidates[self.picked]

    def to_dict(self) -> dict[str, Any]:
        data = self.result.to_dict()
        data["picked"] = self.picked + 1
        if self.comparison is not None:
            c = self.comparison
            data["comparison"] = {"target": c.target, "original_answer": c.original_answer,
                                  "optimized_answer": c.optimized_answer}
        return data


@dataclass
class Session:
    turns: list[Turn] = field(default_factory=list)

    @property
    def last(self) -> Turn:
        return self.recent(1)[0]

    def recent(self, count: int | None = None) -> list[Turn]:
        """The last ``count`` turns (all by default); a usage error while there are none."""
        if not self.turns:
            raise UsageError("nothing optimized yet; type a prompt first")
        return self.turns[-count:] if count else list(self.turns)

    def save(self, path: Path) -> None:
        """Write the session as Markdown (.md) or JSON Lines (.jsonl), atomically."""
        formats = {".md": to_markdown, ".markdown": to_markdown, ".jsonl": to_jsonl}
        render = formats.get(path.suffix.lower())
        if render is None:
            raise UsageError(f"cannot save as {path.suffix or 'a file without extension'}; name it .md or .jsonl")
        if not self.turns:
            raise UsageError("nothing to save yet; type a prompt first")
        write_atomic(path, render(self.turns))


def to_markdown(turns: list[Turn]) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# bpo-local session ({now})\n"]
    for number, turn in enumerate(turns, 1):
        r = turn.result
        status = ", interrupted" if r.cancelled else ""
        out.append(f"## Turn {number}: {r.mode}, {r.model}, seed {r.seed}{status}\n")
        out.append(f"### Prompt\n\n{r.prompt}\n")
        if len(r.candidates) == 1:
            out.append(f"### Optimized\n\n{r.text}\n")
        for index, text in enumerate(r.candidates if len(r.candidates) > 1 else ()):
            mark = " (picked)" if index == turn.picked else ""
            out.append(f"### Candidate {index + 1}{mark}\n\n{text}\n")
        if turn.comparison is not None:
            c = turn.comparison
            out.append(f"### Answer of {c.target} to the original prompt\n\n{c.original_answer}\n")
            out.append(f"### Answer of {c.target} to the optimized prompt\n\n{c.optimized_answer}\n")
    return "\n".join(out)


def to_jsonl(turns: list[Turn]) -> str:
    return "".join(json.dumps(turn.to_dict(), ensure_ascii=False) + "\n" for turn in turns)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, creating its folder; failures are one-line UsageErrors."""
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}; choose another place") from exc
