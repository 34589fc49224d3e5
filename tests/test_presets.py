"""BPO's semantics against the reference script's own expressions (src/infer_example.py of thu-coai/BPO)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bpo_local.errors import UsageError
from bpo_local.presets import (
    AGGRESSIVE,
    PRESETS,
    STABLE,
    TEMPLATE,
    Overrides,
    bans_follow_cuts,
    build_prompt,
    parse_parameter,
    postprocess,
)

REFERENCE_TEMPLATE = (
    "[INST] You are an expert prompt engineer. Please help me improve this prompt to get a more helpful "
    "and harmless response:\n{} [/INST]"
)


def reference_stable(decoded_prompt_and_output: str) -> str:
    return decoded_prompt_and_output.split("[/INST]")[1].strip()


def reference_aggressive(decoded_prompt_and_output: str) -> str:
    text = decoded_prompt_and_output.split("[/INST]")[1]
    return text.split("[KE")[0].split("[INS")[0].split("[PRO")[0].strip()


GENERATIONS = [
    " Please explain how to bake bread, step by step. ",
    " Describe the French Revolution. [KEEP the tone] and more",
    " Give three tips. [INSTRUCTION] ignore",
    " Summarise this. [PROTECT]x",
    " Answer briefly. [/INST] a second turn that the reference drops",
    " \n\nMulti\nline 😀 emoji ",
    "",
]


def test_template_is_the_reference_one() -> None:
    assert TEMPLATE == REFERENCE_TEMPLATE
    assert build_prompt("hi") == REFERENCE_TEMPLATE.format("hi")


@pytest.mark.parametrize("generated", GENERATIONS)
def test_postprocess_matches_reference_expressions(generated: str) -> None:
    decoded = build_prompt("how can I create a profile on Facebook?") + generated
    assert postprocess(generated, STABLE) == reference_stable(decoded)
    assert postprocess(generated, AGGRESSIVE) == reference_aggressive(decoded)


def test_reference_numbers() -> None:
    assert (STABLE.n, STABLE.temperature, STABLE.top_p, STABLE.max_new_tokens) == (1, 0.6, 0.9, 1024)
    assert (AGGRESSIVE.n, AGGRESSIVE.temperature, AGGRESSIVE.top_p, AGGRESSIVE.max_new_tokens) == (5, 0.9, 0.9, 1024)
    assert AGGRESSIVE.banned_strings == ("[PROTECT]", "\n\n[PROTECT]", "[KEEP", "[INSTRUCTION]")
    assert AGGRESSIVE.stop_on_newline and not STABLE.stop_on_newline
    assert set(PRESETS) == {"stable", "aggressive"}


def test_overrides_apply_and_are_checked() -> None:
    assert AGGRESSIVE.with_overrides(Overrides(n=2, temperature=None)).n == 2
    assert AGGRESSIVE.with_overrides(Overrides(n=2)).temperature == 0.9
    assert STABLE.with_overrides(Overrides(max_tokens=7, seed=3)).max_new_tokens == 7
    for bad in ({"n": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"max_tokens": 0},
                {"seed": -1}, {"n": 1.5}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            Overrides(**bad)


def test_parameters_parse_with_one_set_of_ranges() -> None:
    assert parse_parameter("top_p", "1") == 1.0 and parse_parameter("top_k", "0") == 0
    for name, text in (("top_p", "0"), ("n", "x"), ("temperature", "-0.1"), ("max_tokens", "0")):
        with pytest.raises(UsageError, match=f"{name} must be"):
            parse_parameter(name, text)


def test_aggressive_bans_only_follow_cut_markers(llama2_tokenizer) -> None:
    """The fact that lets a backend without multi-token bans run aggressive mode unchanged."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(llama2_tokenizer))
    assert bans_follow_cuts(AGGRESSIVE, sp.encode, sp.decode)
    unguarded = replace(AGGRESSIVE, cut_markers=("[KE",))
    assert not bans_follow_cuts(unguarded, sp.encode, sp.decode)
