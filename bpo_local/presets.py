"""Optimizer presets as data: how a prompt is wrapped, sampling, bans, stop rules, clean-up, and whether
the result replaces the prompt or is appended to it.

BPO's two modes (``stable``, ``aggressive``) follow ``src/infer_example.py`` of thu-coai/BPO (transformers);
PAS and MePO are presets of the same form (``PAS``, ``MEPO``, their sources cited there). A user adds one
as a TOML file in the config folder (``preset_files.py``). Everything here is independent of any backend:
the local llama.cpp engine and the remote backends serve the same presets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UsageError

TEMPLATE = (
    "[INST] You are an expert prompt engineer. Please help me improve this prompt to get a more "
    "helpful and harmless response:\n{} [/INST]"
)
"""BPO's prompt template; BOS is prepended when tokenizing."""

TRANSFORMERS_DEFAULT_TOP_K = 50
"""``generate()`` applies top_k=50 unless told otherwise; BPO's reference relies on that default."""

REFERENCE_SPLIT = "[/INST]"
"""The reference keeps the text between the first and second ``[/INST]`` of the decoded output."""

PLACEHOLDER = "{prompt}"
"""Where a preset's template takes the user's prompt (every occurrence is replaced)."""

WRAPS = ("raw", "chat")
"""``raw``: the template's text after BOS, as is. ``chat``: the template is the user turn (after the
preset's system turn, if any), rendered through the model's own chat template."""

USES = ("replace", "append")
"""``replace``: the cleaned output is the new prompt. ``append``: prompt + separator + cleaned output."""


@dataclass(frozen=True)
class Preset:
    """One optimizer mode: how to wrap the prompt, how many candidates, how to sample, what to ban,
    when to stop, how to clean up, and how the result is used. The defaults are BPO's."""

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
    template: str = TEMPLATE.replace("{}", PLACEHOLDER)
    """The text around the prompt (``{prompt}`` marks it): after BOS (raw) or as the user turn (chat)."""
    wrap: str = "raw"
    system: str | None = None
    """The system turn of a ``chat`` preset (None: none; the model's chat template may add its default)."""
    stop_tokens: tuple[str, ...] = ()
    """Texts of special tokens that end generation besides the model's EOS (``<|im_end|>``...)."""
    end_marker: str | None = REFERENCE_SPLIT
    """The output ends at this text, before the cut markers apply (BPO: a second ``[/INST]``)."""
    delete: tuple[str, ...] = ()
    """Texts removed wherever they occur in the output, after the cuts."""
    use: str = "replace"
    separator: str = "\n"
    """Between the prompt and the output when ``use`` is ``append``."""
    source: str = "thu-coai/BPO src/infer_example.py"
    """Where the settings come from."""
    licence: str = "Apache-2.0 (thu-coai/BPO); weights: see the THUDM/BPO model card"

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


def raw_chat_template(preset: Preset) -> str:
    """A raw preset's template as Jinja, for GGUF ``tokenizer.chat_template`` (llama-server, LM Studio and
    Ollama then wrap a user turn as the optimizer does)."""
    return ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
            + preset.template.replace(PLACEHOLDER, "{{ message['content'] }}")
            + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
            "{% endfor %}")


CHAT_TEMPLATE_JINJA = raw_chat_template(STABLE)
"""BPO's template as Jinja."""

PRESETS: dict[str, Preset] = {p.name: p for p in (STABLE, AGGRESSIVE)}
"""BPO's modes."""
MODES = tuple(PRESETS)

PAS = Preset(
    name="pas",
    n=1,
    temperature=0.6,
    top_p=0.9,
    top_k=TRANSFORMERS_DEFAULT_TOP_K,
    max_new_tokens=1024,
    template=(
        "## Background\n\n"
        "You are an expert in enhancing user prompts, proficient in providing detailed supplements. When "
        "identifying areas in user prompts needing further elaboration, you offer precise additions to help the "
        "user understand the core intent of their question more deeply. Focus on providing general methods and "
        "strategies, not specific details.\n"
        "Note: Only supplement user prompts, do not directly answer them; keep supplementary content to around "
        "30 words, and try not to exceed 30 words.\n\n"
        "## Task\n\n"
        "<User prompt>:\n{prompt}\n<Complementary information>:\n"
    ),
    wrap="chat",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    end_marker=None,
    use="append",
    separator="\n",
    source="PKU-Baichuan-MLSystemLab/PAS scripts/make_train_data.py user_input_tmp (trained as the one user turn "
           "of a chat); sampling: BPO's stable settings, as third-party evaluations run it (the authors publish none)",
    licence="none published (no licence file in PKU-Baichuan-MLSystemLab/PAS); weights PKU-Baichuan-MLSystemLab/PAS-7B",
)
"""PAS (arXiv 2407.06027): a ~30-word supplement appended to the prompt after a newline."""

MEPO = Preset(
    name="mepo",
    n=1,
    temperature=0.0,
    top_p=1.0,
    top_k=0,
    max_new_tokens=1024,
    template=(
        "You are an expert of prompt optimization.\n\n"
        "Sliver Prompt:\n'{prompt}'\n\n\n"
        "The optional Sliver Response was generated by an AI based on the Silver Prompt. Please help modify the "
        "Silver Prompt to Golden Prompt (in English) that can obtain a more correct response, in reference to the "
        "optional Golden Response. The Golden Prompt should be strictly faithful to any factual information in the "
        "Silver Prompt. Only give me the content of Golden Prompt in English, do not contain any other information "
        "(e.g., your response of the Golden Prompt, any postfix like 'Golden Prompt', etc.).\n"
    ),
    wrap="chat",
    system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    end_marker=None,
    delete=("Golden Prompt:",),
    source="MidiyaZhu/MePO data/optimize_prompt_instrution.txt (read in text mode: CRLF as LF; S_P replaced) and "
           "MePO_optimized_downstream_task.py (system turn, greedy, 1024 new tokens, replace('Golden Prompt:', ''))",
    licence="none published (no licence file in MidiyaZhu/MePO); weights zixiaozhu/MePO (Qwen2.5-7B-Instruct + LoRA)",
)
"""MePO (arXiv 2505.09930): the output replaces the prompt."""

BUILTIN: dict[str, Preset] = {p.name: p for p in (STABLE, AGGRESSIVE, PAS, MEPO)}
"""Every preset that ships: BPO's modes, PAS and MePO."""


def build_prompt(user_prompt: str, preset: Preset = STABLE) -> str:
    """The text the optimizer sees for ``user_prompt``: the raw text after BOS (BOS is added by the
    tokenizer, not here), or a chat preset's user turn."""
    return preset.template.replace(PLACEHOLDER, user_prompt)


def postprocess(generated: str, preset: Preset) -> str:
    """Turn decoded generated text (special tokens skipped) into the output the preset keeps.

    Mirrors BPO's reference: the text ends at the next ``[/INST]``, is cut at the preset's markers,
    then stripped; a preset may also delete texts (MePO's ``Golden Prompt:``).
    """
    text = generated if preset.end_marker is None else generated.split(preset.end_marker, 1)[0]
    for marker in preset.cut_markers:
        text = text.split(marker, 1)[0]
    for unwanted in preset.delete:
        text = text.replace(unwanted, "")
    return text.strip()


def final_prompt(prompt: str, output: str, preset: Preset) -> str:
    """What the user sends on: ``output`` (replace), or ``prompt`` with ``output`` appended (the prompt
    alone when the output is empty)."""
    if preset.use == "replace":
        return output
    return prompt + preset.separator + output if output else prompt


def bans_follow_cuts(preset: Preset, tokenize: Callable[[str], list[int]],
                     detokenize: Callable[[list[int]], str]) -> bool:
    """Whether skipping the preset's multi-token bans leaves every final candidate unchanged.

    A ban acts only once the tokens before its last one were generated; when their text already
    holds a cut marker (or ``[/INST]``), ``postprocess`` drops everything from there on. True in
    aggressive mode: ``[PRO``, ``[KE`` and ``[INS`` precede every banned token. ``tokenize`` is
    without BOS, as the bans are.
    """
    markers = (*preset.cut_markers, *([preset.end_marker] if preset.end_marker else []))
    for banned in preset.banned_strings:
        ids = tokenize(banned)
        if len(ids) > 1 and not any(m in detokenize(ids[:-1]) for m in markers):
            return False
    return True


_TEXT_FIELDS = ("template", "wrap", "use", "separator", "source", "licence")
_TEXT_LISTS = ("banned_strings", "cut_markers", "stop_tokens", "delete")
_OPTIONAL_TEXT = ("system", "end_marker")


def preset_from_dict(data: dict[str, Any], *, where: str) -> Preset:
    """A preset from its fields as TOML or JSON hold them (lists for tuples); UsageError naming ``where``
    and the field when one is unknown, of the wrong type or out of range. Unset fields take BPO's stable
    mode's values, except the template, which a preset must give."""
    unknown = sorted(set(data) - set(Preset.__dataclass_fields__))
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(Preset.__dataclass_fields__)}")
    for key in ("name", "template"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UsageError(f"{where}: {key} must be a non-empty string")
    fields = {**vars(STABLE), "end_marker": None, "source": where, "licence": "", **data}
    for key in _TEXT_FIELDS:
        _expect(isinstance(fields[key], str), where, key, "a string")
    for key in _OPTIONAL_TEXT:
        _expect(fields[key] is None or isinstance(fields[key], str), where, key, "a string")
    for key in _TEXT_LISTS:
        value = fields[key]
        _expect(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), where, key,
                "a list of strings")
        fields[key] = tuple(value)
    _expect(fields["wrap"] in WRAPS, where, "wrap", " or ".join(WRAPS))
    _expect(fields["use"] in USES, where, "use", " or ".join(USES))
    _expect(PLACEHOLDER in fields["template"], where, "template", f"a text holding {PLACEHOLDER}")
    _expect(isinstance(fields["stop_on_newline"], bool), where, "stop_on_newline", "true or false")
    extra = fields["min_new_tokens_extra"]
    _expect(extra is None or (isinstance(extra, int) and not isinstance(extra, bool) and extra >= 0), where,
            "min_new_tokens_extra", "a whole number >= 0")
    for key in ("n", "temperature", "top_p", "top_k", "max_new_tokens"):
        limit = "max_tokens" if key == "max_new_tokens" else key
        value = fields[key]
        if LIMITS[limit].kind is float and isinstance(value, int) and not isinstance(value, bool):
            fields[key] = value = float(value)
        try:
            check_parameter(limit, value)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}".replace(f"{limit} must", f"{key} must", 1)) from None
    return Preset(**fields)


def preset_to_dict(preset: Preset) -> dict[str, Any]:
    """The preset's fields, JSON- and TOML-ready (tuples as lists, unset ones left out)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(preset).items() if v is not None}


def _expect(ok: bool, where: str, key: str, what: str) -> None:
    if not ok:
        raise UsageError(f"{where}: {key} must be {what}")
