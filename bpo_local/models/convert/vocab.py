"""Tokenizers to GGUF vocabularies, as llama.cpp's own converter writes them.

SentencePiece ``tokenizer.model`` (Llama-2, BPO) is preferred; otherwise a byte-level BPE
``tokenizer.json`` (Llama-3 / GPT-2 style). Special ids, add_bos/add_eos, merges and the chat
template come from gguf-py's ``SpecialVocab``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from ...errors import ConversionError

_SPIECE_SPACE = "\u2581"

_PRE_TOKENIZER_REGEXES: dict[str, str] = {
    # llama.cpp's "llama-bpe" pre-tokenizer (Llama 3, and the many models that copied its regex).
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
}


@dataclass(frozen=True)
class Vocab:
    """Everything ``tokenizer.*`` in the GGUF: the token table, its model, and the special tokens."""

    model: str
    """``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE)."""
    pre: str
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None
    special: gguf.SpecialVocab
    add_space_prefix: bool | None = None

    def write(self, writer: gguf.GGUFWriter, chat_template: str | None = None) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if chat_template is not None:
            self.special.chat_template = chat_template
        self.special.add_to_gguf(writer, quiet=True)


def load_vocab(checkpoint: Path, vocab_size: int) -> Vocab:
    """The checkpoint's vocabulary padded to ``vocab_size`` (config.json's) with ``[PAD{i}]`` tokens."""
    config = _read_json(checkpoint / "tokenizer_config.json") or {}
    add_space_prefix = config.get("add_prefix_space")
    if (checkpoint / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece(checkpoint, vocab_size, config)
        special = gguf.SpecialVocab(checkpoint, n_vocab=len(tokens))
        return Vocab("llama", "default", tokens, types, scores, special, add_space_prefix)
    if (checkpoint / "tokenizer.json").is_file():
        tokenizer = _read_json(checkpoint / "tokenizer.json")
        tokens, types = _byte_level_bpe(tokenizer, vocab_size)
        special = gguf.SpecialVocab(checkpoint, load_merges=True)
        return Vocab("gpt2", _pre_tokenizer(tokenizer), tokens, types, None, special, add_space_prefix)
    raise ConversionError(
        f"no tokenizer in {checkpoint}: expected tokenizer.model (SentencePiece) or tokenizer.json; "
        "download the full checkpoint")


def _sentencepiece(checkpoint: Path, vocab_size: int,
                   config: dict[str, Any]) -> tuple[list[bytes], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    path = checkpoint / "tokenizer.model"
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError):
        raise ConversionError(f"corrupt tokenizer file {path.name}: download the checkpoint again") from None

    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (gguf.TokenType.UNKNOWN if sp.IsUnknown(i) else gguf.TokenType.CONTROL if sp.IsControl(i)
                    else gguf.TokenType.UNUSED if sp.IsUnused(i) else gguf.TokenType.BYTE if sp.IsByte(i)
                    else gguf.TokenType.NORMAL)

    for content, i in (_read_json(checkpoint / "added_tokens.json") or {}).items():
        if i < vocab_size:
            tokens[i], scores[i], types[i] = content.encode("utf-8"), -1000.0, gguf.TokenType.USER_DEFINED
    for key, data in config.get("added_tokens_decoder", {}).items():
        i, content = int(key), data["content"]
        if i >= vocab_size:
            continue
        if data.get("special") or _looks_special(content):
            types[i] = gguf.TokenType.CONTROL
        else:
            content = content.replace(_SPIECE_SPACE, " ")
            types[i] = gguf.TokenType.USER_DEFINED
        tokens[i], scores[i] = content.encode("utf-8"), -1000.0
    return tokens, scores, [int(t) for t in types]


def _byte_level_bpe(tokenizer: dict[str, Any], vocab_size: int) -> tuple[list[bytes], list[int]]:
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConversionError(
            f"unsupported tokenizer.json model {model.get('type')!r}: only byte-level BPE is supported")
    by_id: dict[int, str] = {i: text for text, i in model["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if by_id and max(by_id) >= vocab_size:
        raise ConversionError(f"tokenizer.json has token id {max(by_id)} but config.json vocab_size is {vocab_size}")

    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(vocab_size):
        text, kind = by_id.get(i), gguf.TokenType.NORMAL
        if text is None:
            text, kind = f"[PAD{i}]", gguf.TokenType.UNUSED
        elif i in added:
            if added[i].get("special") or _looks_special(text):
                kind = gguf.TokenType.CONTROL
            else:
                text, kind = text.replace(_SPIECE_SPACE, " "), gguf.TokenType.USER_DEFINED
        tokens.append(text.encode("utf-8"))
        types.append(int(kind))
    return tokens, types


def _pre_tokenizer(tokenizer: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer, read from the tokenizer.json pipeline."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"]:
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in _PRE_TOKENIZER_REGEXES:
            return _PRE_TOKENIZER_REGEXES[regex]
    raise ConversionError(
        f"unsupported tokenizer.json pre-tokenizer {json.dumps(pre)[:120]}; "
        "supported: GPT-2 byte-level and the Llama-3 regex")


def _looks_special(text: str) -> bool:
    """Tokens some checkpoints forget to flag as special (same rule as llama.cpp's converter)."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConversionError(f"corrupt tokenizer file {path.name}: download the checkpoint again") from None
