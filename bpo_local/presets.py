"""BPO's semantics, defined once: template, sampling presets, bans, stop rules, post-processing.

Everything here follows ``src/infer_example.py`` of thu-coai/BPO (transformers) and is independent of
any backend: the local llama.cpp engine and any future remote backend serve the same presets.
"""

from __future__ import annotations

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

    def with_overrides(self, **overrides: object) -> Preset:
        """This preset with every non-None override applied (``n``, ``temperature``, ...), checked."""
        preset = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        preset.check()
        return preset

    def check(self) -> None:
        """Raise UsageError naming the first out-of-range number."""
        problems = (
            (self.n < 1, f"n must be at least 1, got {self.n}"),
            (self.temperature < 0, f"temperature must be >= 0, got {self.temperature}"),
            (not 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k < 0, f"top_k must be >= 0 (0 = off), got {self.top_k}"),
            (self.max_new_tokens < 1, f"max tokens must be at least 1, got {self.max_new_tokens}"),
        )
        for bad, message in problems:
            if bad:
                raise UsageError(message)


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
