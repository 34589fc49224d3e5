"""Compare two GGUF files the way the converter promises: tensors byte for byte, vocabulary, special ids."""

from __future__ import annotations

from pathlib import Path

TOKENIZER_KEYS = (
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
)


def differences(ours: Path, theirs: Path) -> list[str]:
    """Human-readable differences; empty when tensors (type, shape, bytes) and vocab keys all match."""
    from gguf import GGUFReader

    a, b = GGUFReader(ours), GGUFReader(theirs)
    problems = []
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    if set(ta) != set(tb):
        problems.append(f"tensor names differ: only ours {sorted(set(ta) - set(tb))}, "
                        f"only theirs {sorted(set(tb) - set(ta))}")
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            problems.append(f"{name}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
        elif x.data.tobytes() != y.data.tobytes():
            problems.append(f"{name}: bytes differ")
    for key in TOKENIZER_KEYS:
        va, vb = _value(a, key), _value(b, key)
        if va != vb:
            problems.append(f"{key}: {_short(va)} vs {_short(vb)}")
    return problems


def _value(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
