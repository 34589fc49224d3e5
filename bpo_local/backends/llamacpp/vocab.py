"""Tokenizer side of a loaded model: text <-> token ids, pieces, and streaming UTF-8 decoding."""

from __future__ import annotations

import codecs
import ctypes
import functools
from collections.abc import Sequence

from .native import llama


class Vocab:
    """Tokenization with the model's own vocabulary (llama_tokenize / llama_detokenize)."""

    def __init__(self, vocab: object) -> None:
        lib = llama()
        self._lib = lib
        self._vocab = vocab
        self.n_vocab: int = lib.llama_vocab_n_tokens(vocab)
        bos = lib.llama_vocab_bos(vocab)
        self.bos_token: int | None = bos if bos >= 0 else None
        self.eos_token: int = lib.llama_vocab_eos(vocab)
        self._by_piece: dict[bytes, int] | None = None
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; with ``parse_special`` False, "</s>" typed by a user is plain text."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buf = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, capacity, False, parse_special)
            if n >= 0:
                tokens = buf[:n]
                break
            capacity = -n
        else:
            raise RuntimeError("llama_tokenize kept asking for a larger buffer")
        if add_bos and self.bos_token is not None:
            tokens.insert(0, self.bos_token)
        return tokens

    def detokenize(self, tokens: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``tokens``; ``skip_special`` drops BOS/EOS and control tokens like transformers."""
        return self.detokenize_bytes(tokens, skip_special=skip_special).decode("utf-8", "replace")

    def detokenize_bytes(self, tokens: Sequence[int], *, skip_special: bool = True) -> bytes:
        if not tokens:
            return b""
        arr = (self._lib.llama_token * len(tokens))(*tokens)
        capacity = len(tokens) * 8 + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_detokenize(self._vocab, arr, len(tokens), buf, capacity,
                                           skip_special, not skip_special)
            if n >= 0:
                return buf.raw[:n]
            capacity = -n
        raise RuntimeError("llama_detokenize kept asking for a larger buffer")

    def text_piece(self, token: int) -> bytes:
        """``piece(token)`` memoised: the bytes a generated token adds to the text."""
        data = self._pieces.get(token)
        if data is None:
            data = self._pieces[token] = self.piece(token)
        return data

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """Bytes of one token as it appears inside a text (no leading-space stripping)."""
        capacity = 32
        for _ in range(2):
            buf = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, capacity, 0, special)
            if n >= 0:
                return buf.raw[:n]
            capacity = -n
        raise RuntimeError("llama_token_to_piece kept asking for a larger buffer")

    def token_for_piece(self, piece: str) -> int | None:
        """The token whose text is exactly ``piece`` ("\\n" -> 13 on Llama-2), or None."""
        target = piece.encode("utf-8")
        tokens = self.tokenize(piece, add_bos=False, parse_special=True)
        if len(tokens) == 1 and self.piece(tokens[0], special=True) == target:
            return tokens[0]
        if self._by_piece is None:  # e.g. SentencePiece adds "▁" before "\n": look it up in the vocab
            by_piece: dict[bytes, int] = {}
            for token in range(self.n_vocab):
                by_piece.setdefault(self.piece(token, special=True), token)
            self._by_piece = by_piece
        return self._by_piece.get(target)

    @functools.cached_property
    def eog_tokens(self) -> frozenset[int]:
        """Tokens llama.cpp treats as end of generation (llama_vocab_is_eog), found once."""
        return frozenset(t for t in range(self.n_vocab) if self._lib.llama_vocab_is_eog(self._vocab, t))

    def check_ids(self, tokens: Sequence[int], what: str) -> None:
        """Raise ValueError for an id outside the vocabulary (llama.cpp would abort the process)."""
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"{what} holds token ids outside the vocabulary of {self.n_vocab}: {bad[:5]}")


class TextStream:
    """Incremental text of one generated sequence: only complete UTF-8 characters are emitted.

    The first piece goes through detokenize so a tokenizer's leading space is dropped exactly as in
    ``Vocab.detokenize`` of the whole sequence; later pieces are appended as they come.
    """

    def __init__(self, vocab: Vocab) -> None:
        self._vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._first = True

    def push(self, token: int) -> str:
        if self._first:
            self._first = False
            data = self._vocab.detokenize_bytes([token], skip_special=True)
        else:
            data = self._vocab.text_piece(token)
        return self._decoder.decode(data)
