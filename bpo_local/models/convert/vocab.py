"""Tokenizers to GGUF vocabularies, as llama.cpp's own converter writes them.

SentencePiece ``tokenizer.model`` (Llama-2, BPO) is preferred; otherwise a byte-level BPE
``tokenizer.json`` (Llama-3 / GPT-2 style), whose pre-tokenizer is named by llama.cpp's checksum
table (``pre_tokenizers``). Special ids, merges and the chat template come from gguf-py's
``SpecialVocab``; add_bos/add_eos/add_sep follow the rules of the gguf-py bundled with llama.cpp,
which are newer than the PyPI release's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from ...errors import ConversionError
from .pre_tokenizers import CHECK_TEXT, LLAMA_CPP, PRE_TOKENIZERS

_SPIECE_SPACE = "\u2581"
_SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
"""SpecialVocab's special-token kinds, in the order it reads their ``add_*_token`` settings."""
_NO_BOS_VOCAB_SIZE = 49152
"""llama.cpp's Llama converter writes add_bos_token = false for this vocabulary size (IBM Granite's
small models; SmolLM's, of the same size, get it too)."""
_LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")

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

    def write(self, writer: gguf.GGUFWriter, chat_template: str | None = None, *, llama_keys: bool = True) -> None:
        """The ``tokenizer.*`` keys, in the order llama.cpp's converter writes them; ``llama_keys`` adds the
        ones only its Llama converter writes (``add_space_prefix``, Granite's add_bos_token = false)."""
        if llama_keys and self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if chat_template is not None:
            self.special.chat_template = chat_template
        self.special.add_to_gguf(writer, quiet=True)
        if llama_keys and len(self.tokens) == _NO_BOS_VOCAB_SIZE:
            writer.add_add_bos_token(False)


def load_vocab(checkpoint: Path, vocab_size: int) -> Vocab:
    """The checkpoint's vocabulary padded to ``vocab_size`` (config.json's) with ``[PAD{i}]`` tokens."""
    config = _read_json(checkpoint / "tokenizer_config.json") or {}
    add_space_prefix = config.get("add_prefix_space")
    tokenizer = _read_json(checkpoint / "tokenizer.json")
    if (checkpoint / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece(checkpoint, vocab_size, config)
        special = gguf.SpecialVocab(checkpoint, n_vocab=len(tokens))
        special.add_special_token = _add_special(tokenizer, config)
        return Vocab("llama", "default", tokens, types, scores, special, add_space_prefix)
    if tokenizer is not None:
        tokens, types = _byte_level_bpe(tokenizer, vocab_size)
        special = gguf.SpecialVocab(checkpoint, load_merges=True)
        special.add_special_token = _add_special(tokenizer, config)
        return Vocab("gpt2", _pre_tokenizer(tokenizer, config), tokens, types, None, special, add_space_prefix)
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


def _pre_tokenizer(tokenizer: dict[str, Any], config: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer: by the check text's checksum, as llama.cpp's converter
    finds it; failing that, by the tokenizer.json definition when it is exactly GPT-2's or Llama-3's."""
    checksum = _check_text_checksum(tokenizer, config)
    if checksum in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[checksum]
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if tokenizer.get("normalizer") is None:
        if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
            return "gpt-2"
        if kinds == ["Split", "ByteLevel"]:
            regex = (steps[0].get("pattern") or {}).get("Regex")
            if regex in _PRE_TOKENIZER_REGEXES:
                return _PRE_TOKENIZER_REGEXES[regex]
    raise ConversionError(
        f"unknown tokenizer.json pre-tokenizer: its check-text checksum {checksum} is not in the table of "
        f"{LLAMA_CPP} and its definition {json.dumps(pre)[:120]} is neither GPT-2's nor Llama-3's; "
        "a newer llama-cpp-python may know this model (llama.cpp's convert_hf_to_gguf_update.py lists them)")


def _check_text_checksum(tokenizer: dict[str, Any], config: dict[str, Any]) -> str:
    """sha256 of the check text's token ids, encoded as transformers' AutoTokenizer would (llama.cpp's
    converter encodes with it): tokenizer_config.json's add_prefix_space (default false) overrides a
    top-level pre-tokenizer's, and LlamaTokenizer rebuilds the post-processor from add_bos/add_eos_token."""
    from tokenizers import Tokenizer, processors

    pre = tokenizer.get("pre_tokenizer") or {}
    if "add_prefix_space" in pre:
        tokenizer = {**tokenizer, "pre_tokenizer": {**pre, "add_prefix_space": config.get("add_prefix_space", False)}}
    try:
        encoder = Tokenizer.from_str(json.dumps(tokenizer))
        if config.get("tokenizer_class") in _LLAMA_TOKENIZER_CLASSES:
            bos = _content(config.get("bos_token")) if config.get("add_bos_token", True) else None
            eos = _content(config.get("eos_token")) if config.get("add_eos_token", False) else None
            single = [f"{bos}:0"] * bool(bos) + ["$A:0"] + [f"{eos}:0"] * bool(eos)
            encoder.post_processor = processors.TemplateProcessing(
                single=" ".join(single), special_tokens=[(t, encoder.token_to_id(t)) for t in {bos, eos} - {None}])
    except Exception as exc:  # tokenizers raises bare Exceptions for definitions it cannot build
        raise ConversionError(f"corrupt tokenizer file tokenizer.json ({exc}): download the checkpoint again") from None
    encoder.no_truncation()
    encoder.no_padding()
    ids = encoder.encode(CHECK_TEXT).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def _add_special(tokenizer: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, bool]:
    """``add_{bos,eos,sep}_token`` as llama.cpp's gguf-py sets them: the tokenizer.json post-processor
    decides (ByteLevel adds nothing, Roberta adds all, a template adds its first/last special token
    and a separator between A and B); tokenizer_config.json's ``add_*_token`` fills in the rest."""
    bos, cls, eos, sep = (config.get(f"{kind}_token") for kind in ("bos", "cls", "eos", "sep"))
    bos, eos = bos or cls, eos or sep  # compared as gguf-py does: an AddedToken dict matches nothing
    add: dict[str, bool] = {}
    post = (tokenizer or {}).get("post_processor") or {}
    for processor in post.get("processors", [post]) if post else []:
        kind = processor.get("type")
        if kind == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            add.update(bos=True, eos=True, sep=True)
        elif kind == "TemplateProcessing":
            single, pair = processor.get("single", []), processor.get("pair", [])
            first = _template_special(single[0]) if len(single) > 1 else None
            last = _template_special(single[-1]) if len(single) > 1 else None
            if first:
                add["bos"] = first in (bos, cls) or not (bos and cls) or not config
            if last:
                add["eos"] = True  # gguf-py makes the template's last special token the EOS
                eos = last
            start = 1 if first and pair and _template_special(pair[0]) == first else 0
            stop = -1 if last and pair and _template_special(pair[-1]) == last else None
            pair = pair[start:stop]
            if pair and _template_sequence(pair[0]) == "A" and _template_sequence(pair[-1]) == "B" and pair[1:-1]:
                middle, seps = [_template_special(item) for item in pair[1:-1]], [t for t in (sep, eos) if t]
                add["sep"] = (middle[0] in seps and not last) or (len(middle) == 2 and middle[1] in seps)
    for kind in _SPECIAL_TYPES:
        if isinstance(value := config.get(f"add_{kind}_token"), bool):
            add.setdefault(kind, value)
    return add


def _template_special(item: dict[str, Any]) -> str | None:
    """The special token a TemplateProcessing item names (None for a sequence)."""
    return item.get("SpecialToken", {}).get("id")


def _template_sequence(item: dict[str, Any]) -> str | None:
    """The sequence (A or B) a TemplateProcessing item names (None for a special token)."""
    return item.get("Sequence", {}).get("id")


def _content(token: object) -> str | None:
    """A tokenizer_config.json token entry (a string or an AddedToken dict) as its text."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


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
