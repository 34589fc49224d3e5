"""Refuse a GGUF that llama.cpp's loader would assert on or crash on, before llama.cpp sees it.

llama.cpp turns most damage into a failed load, but some into an abort of the whole process:
duplicate vocabulary strings (``GGML_ASSERT(id_to_token.size() == token_to_id.size())``), a layer count
out of range, an inconsistent expert setup, an unknown RoPE scaling type, a negative or NaN norm epsilon
(``GGML_ASSERT(eps >= 0.0f)`` at the first decode). ``check_gguf`` finds those and
what ``read_gguf`` finds in the header, so the caller can say which fact is wrong.
"""

from __future__ import annotations

from pathlib import Path

from ...gguf_header import GGUFFile, read_gguf

MAX_LAYERS, MAX_EXPERTS = 512, 1024
"""LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS of the bundled llama.cpp."""
ROPE_SCALING = ("none", "linear", "yarn", "longrope")
_STRING = 8
_NO_VOCAB = ("no_vocab", "none")


def check_gguf(path: Path) -> GGUFFile:
    """The parsed header of ``path``; ValueError naming the first fact llama.cpp's loader would abort on."""
    gguf = read_gguf(path)
    arch = gguf.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError("general.architecture is missing or not a string")
    _check_hparams(gguf, arch)
    _check_vocab(gguf)
    return gguf


def _int(gguf: GGUFFile, key: str, default: int = 0) -> int:
    value = gguf.metadata.get(key, default)
    return value if isinstance(value, int) else default


def _check_hparams(gguf: GGUFFile, arch: str) -> None:
    n_layer = _int(gguf, f"{arch}.block_count", 1)
    if not 0 < n_layer <= MAX_LAYERS:
        raise ValueError(f"{arch}.block_count is {n_layer} (llama.cpp takes 1 to {MAX_LAYERS})")
    if _int(gguf, f"{arch}.nextn_predict_layers") > n_layer:
        raise ValueError(f"{arch}.nextn_predict_layers exceeds {arch}.block_count ({n_layer})")
    experts, used = _int(gguf, f"{arch}.expert_count"), _int(gguf, f"{arch}.expert_used_count")
    groups, groups_used = _int(gguf, f"{arch}.expert_group_count"), _int(gguf, f"{arch}.expert_group_used_count")
    sound = used <= experts <= MAX_EXPERTS and (
        (used > 0 and groups < experts and (groups <= 1 or (experts % groups == 0 and 0 < groups_used < groups)))
        if experts else groups == 0)
    if not sound:
        raise ValueError(f"the expert counts do not fit together ({experts} experts, {used} used, "
                         f"{groups} groups, {groups_used} groups used)")
    for key, value in gguf.metadata.items():
        if key.startswith(f"{arch}.") and key.endswith("epsilon") and not (isinstance(value, float) and value >= 0):
            raise ValueError(f"{key} is {value!r}, not a number at least 0")
    scaling = gguf.metadata.get(f"{arch}.rope.scaling.type", "linear")
    if scaling not in ROPE_SCALING:
        raise ValueError(f"{arch}.rope.scaling.type {scaling!r} is not one of {', '.join(ROPE_SCALING)}")


def _check_vocab(gguf: GGUFFile) -> None:
    if gguf.metadata.get("tokenizer.ggml.model") in _NO_VOCAB:
        return
    tokens = gguf.arrays.get("tokenizer.ggml.tokens")
    if tokens is None or tokens.item_type != _STRING:
        return  # llama.cpp refuses the file without aborting
    if tokens.count >= 2**31:
        raise ValueError(f"the vocabulary has {tokens.count} tokens, more than token ids can number")
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in gguf.arrays and gguf.arrays[key].count < tokens.count:
            raise ValueError(f"{key} has {gguf.arrays[key].count} entries for {tokens.count} tokens")
    texts = [text or b"[EMPTY_%d]" % i for i, text in enumerate(gguf.byte_strings("tokenizer.ggml.tokens"))]
    if len(set(texts)) == len(texts):  # llama.cpp's name for an empty token above
        return
    seen: dict[bytes, int] = {}
    for i, text in enumerate(texts):
        first = seen.setdefault(text, i)
        if first != i:
            raise ValueError(f"token {i} repeats token {first} ({text.decode('utf-8', 'replace')!r}) "
                             "in tokenizer.ggml.tokens")
