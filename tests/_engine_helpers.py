"""Helpers for the engine tests: chat prompts, a plain llama.cpp loop's logits, sampling distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def chat_prompt(engine, text: str) -> tuple[int, ...]:
    """SmolLM2's ChatML prompt for one user message, ready for the assistant's reply."""
    return tuple(engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n",
                                 add_bos=False, parse_special=True))


def plain_logits(path: Path, prompt: Sequence[int], forced: Sequence[int], n_threads: int = 1) -> np.ndarray:
    """Reference: the simplest llama.cpp loop (llama_batch_get_one), fed ``forced`` one token at a time
    after the prompt; the logits after the prompt and after each forced token, (len(forced) + 1, n_vocab)."""
    import llama_cpp.llama_cpp as lib

    from bpo_local.backends.llamacpp import buffers

    model_params = lib.llama_model_default_params()
    buffers.apply("auto", model_params)  # the engine's default: no AMX weight buffers (they crash)
    model = lib.llama_model_load_from_file(str(path).encode(), model_params)
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 1024, n_threads, n_threads
    ctx = lib.llama_init_from_model(model, params)
    n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
    try:
        rows = []
        for batch in (list(prompt), *([t] for t in forced)):
            tokens = (lib.llama_token * len(batch))(*batch)
            assert lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(batch))) == 0
            rows.append(np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy())
        return np.stack(rows)
    finally:
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


def away_from_the_cut(samples: Sequence[int], logits: np.ndarray, temperature: float, top_k: int, top_p: float,
                      noise: float = 0.01) -> tuple[list[int], np.ndarray]:
    """The draws, and transformers' distribution, conditioned on the tokens that float noise cannot move
    across the top-k / top-p cut-off.

    The engine samples from its own evaluation of the prompt, which rounds differently from
    ``logits`` (another batch shape; another CPU). A token within ``noise`` (in logit) of the top-k
    cut, or within the matching shift of cumulative probability of the top-p cut, may be in on one
    and out on the other: its draws are dropped and its mass removed. Among the others the two
    distributions are proportional, so the conditioned draws must still fit the conditioned one.
    """
    x = logits.astype(np.float64) / temperature
    d = 2 * noise / temperature  # two tokens' logits may move towards each other
    edge = np.zeros(len(x), dtype=bool)
    if top_k > 0:
        ascending = np.sort(x)
        near_or_above = len(x) - np.searchsorted(ascending, x - d, side="right") - 1  # others within d or above
        surely_above = len(x) - np.searchsorted(ascending, x + d, side="left")
        edge |= (near_or_above >= top_k) & (surely_above < top_k)
    probs = _softmax(_top_k(x, top_k))
    order = np.argsort(-probs, kind="stable")
    before = np.empty_like(probs)
    before[order] = np.cumsum(probs[order]) - probs[order]  # mass of the tokens ranked above each one
    edge |= (probs > 0) & (np.abs(before - top_p) <= 2 * d)
    expected = transformers_distribution(logits, temperature, top_k, top_p)
    expected = np.where(edge, 0.0, expected)
    return [t for t in samples if not edge[t]], expected / expected.sum()


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
