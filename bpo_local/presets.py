"""BPO's semantics, defined once: template, sampling presets, bans, stop rules, post-processing.

Everything here follows ``src/infer_example.py`` of thu-coai/BPO (transformers) and is independent of
any backend: the local llama.cpp engine and any future remote backend serve the same presets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .errors import UsageError

TEMPLATE = (
    "[INST] You are an expert prompt engineer. Please help me improve this prompt to get a more "
    "helpful and harmless response:\n{} [/INST]"
)
"""BPO's prompt template; BOS is prepended when tokenizing."""

CHAT_TEMPLATE_JINJA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    + TEMPLATE.format("{{ message['content'] }}")
    + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
"""The same template as Jinja, for GGUF ``tokenizer.chat_template`` (llama-server, LM Studio, Ollama)."""

TRANSFORMERS_DEFAULT_TOP_K = 50
"""``generate()`` applies top_k=50 unless told otherwise; BPO's reference relies on that default."""

REFERENCE_SPLIT = "[/INST]"
"""The reference keeps the text between the first and second ``[/INST]`` of the decoded output."""


@dataclass(frozen=True)
class Preset:
    """One BPO mode: how many candidates, how to sample, what to ban, when to stop, how to clean up."""

    name: str
    n: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    banned_strings: tuple[str, ...] = ()
    """Sequences banned with transformers' ``bad_words_ids`` semantics (tokenized without BOS)."""
    stop_on_newline: bool = False
    """Stop at the newline token as well as at EOS (the reference passes ``eos_token_id=[eos, 13]``)."""
    min_new_tokens_extra: int | None = None
    """If set, EOS/newline cannot end generation before len(tokens(user prompt, with BOS)) + this."""
    cut_markers: tuple[str, ...] = field(default=())
    """Each candidate is cut at the first of these markers, in this order."""

    def with_overrides(self, overrides: Overrides) -> Preset:
        """This preset with every set field of ``overrides`` applied (already range-checked)."""
        changes = {("max_new_tokens" if k == "max_tokens" else k): v
                   for k, v in overrides.changes().items() if k != "seed"}
        return replace(self, **changes)


@dataclass(frozen=True)
class Limit:
    """The range of one tunable number; every face parses and checks it here."""

    kind: type
    low: float
    high: float | None = None
    low_open: bool = False
    note: str = ""

    def describe(self) -> str:
        word = "a whole number" if self.kind is int else "a number"
        if self.high is not None:
            return f"{word} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        return f"{word} {'>' if self.low_open else '>='} {self.low:g}{self.note}"

    def ok(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)


LIMITS: dict[str, Limit] = {
    "n": Limit(int, 1),
    "temperature": Limit(float, 0, note=" (0 = greedy)"),
    "top_p": Limit(float, 0, 1, low_open=True),
    "top_k": Limit(int, 0, note=" (0 = off)"),
    "max_tokens": Limit(int, 1),
    "seed": Limit(int, 0, 2**32 - 1),
}
"""The one set of names and ranges for the overrides (library, CLI flags and REPL commands)."""


def check_parameter(name: str, value: object) -> None:
    """Raise UsageError naming ``name``, its range and the value when ``value`` is out of range."""
    limit = LIMITS[name]
    number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if limit.kind is int and not isinstance(value, int):
        number_ok = False
    if not number_ok or not limit.ok(value):  # type: ignore[arg-type]
        raise UsageError(f"{name} must be {limit.describe()}, got {value!r}")


def parse_parameter(name: str, text: str) -> int | float:
    """``text`` as the value of ``name``, checked; UsageError otherwise."""
    try:
        value = LIMITS[name].kind(text)
    except ValueError:
        raise UsageError(f"{name} must be {LIMITS[name].describe()}, got {text!r}") from None
    check_parameter(name, value)
    return value


@dataclass(frozen=True)
class Overrides:
    """The user's changes to a preset; None keeps the preset's value. Checked when made."""

    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, value in self.changes().items():
            check_parameter(name, value)

    def changes(self) -> dict[str, int | float]:
        """The fields that are set, by name."""
        return {f: getattr(self, f) for f in LIMITS if getattr(self, f) is not None}


STABLE = Preset(
    name="stable",
    n=1,
    temperature=0.6,
    top_p=0.9,
    top_k=TRANSFORMERS_DEFAULT_TOP_K,
    max_new_tokens=1024,
)

AGGRESSIVE = Preset(
    name="aggressive",
    n=5,
    temperature=0.9,
    top_p=0.9,
    top_k=TRANSFORMERS_DEFAULT_TOP_K,
    max_new_tokens=1024,
    banned_strings=("[PROTECT]", "\n\n[PROTECT]", "[KEEP", "[INSTRUCTION]"),
    stop_on_newline=True,
    min_new_tokens_extra=5,
    cut_markers=("[KE", "[INS", "[PRO"),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (STABLE, AGGRESSIVE)}
MODES = tuple(PRESETS)


def build_prompt(user_prompt: str) -> str:
    """The text BPO sees for ``user_prompt`` (BOS is added by the tokenizer, not here)."""
    return TEMPLATE.format(user_prompt)


def postprocess(generated: str, preset: Preset) -> str:
    """Turn decoded generated text (special tokens skipped) into the final optimized prompt.

    Mirrors the reference: the text ends at the next ``[/INST]``, is cut at the preset's markers,
    then stripped.
    """
    text = generated.split(REFERENCE_SPLIT, 1)[0]
    for marker in preset.cut_markers:
        text = text.split(marker, 1)[0]
    return text.strip()


def bans_follow_cuts(preset: Preset, tokenize: Callable[[str], list[int]],
                     detokenize: Callable[[list[int]], str]) -> bool:
    """Whether skipping the preset's multi-token bans leaves every final candidate unchanged.

    A ban acts only once the tokens before its last one were generated; when their text already
    holds a cut marker (or ``[/INST]``), ``postprocess`` drops everything from there on. True in
    aggressive mode: ``[PRO``, ``[KE`` and ``[INS`` precede every banned token. ``tokenize`` is
    without BOS, as the bans are.
    """
    markers = (*preset.cut_markers, REFERENCE_SPLIT)
    for banned in preset.banned_strings:
        ids = tokenize(banned)
        if len(ids) > 1 and not any(m in detokenize(ids[:-1]) for m in markers):
            return False
    return True
