"""Helpers for the engine tests: chat prompts, a plain llama.cpp greedy loop, sampling distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def chat_prompt(engine, text: str) -> tuple[int, ...]:
    """SmolLM2's ChatML prompt for one user message, ready for the assistant's reply."""
    return tuple(engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n",
                                 add_bos=False, parse_special=True))


def plain_greedy(path: Path, prompt: Sequence[int], n_tokens: int, n_threads: int = 1) -> list[int]:
    """Reference: the simplest llama.cpp loop (llama_batch_get_one + greedy sampler), no stops."""
    import llama_cpp.llama_cpp as lib

    from bpo_local.backends.llamacpp import buffers

    model_params = lib.llama_model_default_params()
    buffers.apply("auto", model_params)  # the engine's default: no AMX weight buffers (they crash)
    model = lib.llama_model_load_from_file(str(path).encode(), model_params)
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 1024, n_threads, n_threads
    ctx = lib.llama_init_from_model(model, params)
    sampler = lib.llama_sampler_init_greedy()
    try:
        tokens = (lib.llama_token * len(prompt))(*prompt)
        assert lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(prompt))) == 0
        out: list[int] = []
        for _ in range(n_tokens):
            token = lib.llama_sampler_sample(sampler, ctx, -1)
            out.append(token)
            one = (lib.llama_token * 1)(token)
            assert lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) == 0
        return out
    finally:
        lib.llama_sampler_free(sampler)
        lib.llama_free(ctx)
        lib.llama_model_free(model)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x[np.isfinite(x)].max())
    return e / e.sum()


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    return np.where(x < np.sort(x)[-k], -np.inf, x) if k > 0 else x


def _top_p(x: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one)."""
    probs = _softmax(x)
    order = np.argsort(-probs, kind="stable")
    keep = order[: int(np.searchsorted(np.cumsum(probs[order]), p)) + 1]
    out = np.full_like(x, -np.inf)
    out[keep] = x[keep]
    return out


def transformers_distribution(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """transformers' warpers: temperature, then top-k, then top-p."""
    return _softmax(_top_p(_top_k(logits.astype(np.float64) / temperature, top_k), top_p))


def llama_cpp_python_distribution(logits: np.ndarray, temperature: float, top_k: int = 40, top_p: float = 0.95,
                                  min_p: float = 0.05) -> np.ndarray:
    """llama-cpp-python's ``Llama`` defaults: top-k, top-p, min-p, and temperature last."""
    x = _top_p(_top_k(logits.astype(np.float64), top_k), top_p)
    probs = _softmax(x)
    x = np.where(probs >= min_p * probs.max(), x, -np.inf)
    return _softmax(x / temperature)


def chi_square_pvalue(samples: Sequence[int], expected: np.ndarray) -> float:
    """Goodness of fit of sampled token ids to a distribution (bins with < 5 expected draws pooled).

    A draw of a token the distribution excludes gives 0. The p-value uses the Wilson-Hilferty
    approximation of the chi-square tail (scipy is not a dependency).
    """
    counts = np.bincount(np.asarray(samples), minlength=len(expected)).astype(np.float64)
    if counts[expected == 0].sum() > 0:
        return 0.0
    n = counts.sum()
    big = expected * n >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big] * n, expected[~big].sum() * n)
    observed, wanted = observed[wanted > 0], wanted[wanted > 0]
    dof = len(wanted) - 1
    if dof < 1:
        return 1.0
    stat = float(((observed - wanted) ** 2 / wanted).sum())
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))
