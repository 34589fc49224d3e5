"""Sampler fidelity: thousands of first-token draws through the engine follow transformers' order
(temperature -> top-k -> top-p) and measurably not llama-cpp-python's (top-k -> top-p -> min-p -> temperature)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from _engine_helpers import (away_from_the_cut, chat_prompt, chi_square_pvalue, llama_cpp_python_distribution,
                             transformers_distribution)

from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine

DRAWS = 2000


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    with Engine(smollm2_gguf, n_threads=1) as eng:
        yield eng


def first_tokens(engine, prompt, sampling: Sampling) -> list[int]:
    """DRAWS first tokens: one request of DRAWS sequences, i.e. seeds seed .. seed+DRAWS-1."""
    result = engine.generate(Request(prompt, 1, sampling, n=DRAWS)).run()
    return [c.tokens[0] for c in result.completions]


def test_hot_sampling_follows_transformers_order_not_llama_cpp_python(engine):
    prompt = chat_prompt(engine, "Name a color.")
    logits = engine.logits(prompt)[-1]
    ours = transformers_distribution(logits, 1.5, 50, 0.9)
    theirs = llama_cpp_python_distribution(logits, 1.5, top_p=0.9)
    assert 0.5 * np.abs(ours - theirs).sum() > 0.3, "the two orders must differ clearly on this prompt"

    draws = first_tokens(engine, prompt, Sampling(temperature=1.5, top_k=50, top_p=0.9, seed=1234))
    assert len(Counter(draws)) > 10
    assert chi_square_pvalue(*away_from_the_cut(draws, logits, 1.5, 50, 0.9)) > 1e-3
    assert chi_square_pvalue(draws, theirs) < 1e-6


def test_stable_preset_settings_follow_transformers(engine):
    prompt = chat_prompt(engine, "Say one word.")
    logits = engine.logits(prompt)[-1]
    sampled = first_tokens(engine, prompt, Sampling(temperature=0.6, top_k=50, top_p=0.9, seed=99))
    draws, expected = away_from_the_cut(sampled, logits, 0.6, 50, 0.9)
    assert len(draws) > 0.9 * DRAWS
    assert chi_square_pvalue(draws, expected) > 1e-3
    counts = np.bincount(draws, minlength=len(expected)) / len(draws)
    assert 0.5 * np.abs(counts - expected).sum() < 0.08


def test_top_p_keeps_the_smallest_set_reaching_p(engine):
    prompt = chat_prompt(engine, "Pick a random animal.")
    logits = engine.logits(prompt)[-1]
    sampled = first_tokens(engine, prompt, Sampling(temperature=1.0, top_p=0.5, seed=5))
    draws, expected = away_from_the_cut(sampled, logits, 1.0, 0, 0.5)
    assert set(draws) <= set(np.flatnonzero(expected)) and len(draws) > DRAWS / 2
    assert chi_square_pvalue(draws, expected) > 1e-3
