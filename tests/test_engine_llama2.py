"""The engine with BPO's own tokenizer (Llama-2 SentencePiece): a tiny random-weight Llama-2 GGUF
built from the real tokenizer.model. Text handling only; the weights are noise."""

from __future__ import annotations

import pytest
from _checkpoints import build_llama2_bin

from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine
from bpo_local.backends.llamacpp.vocab import TextStream
from bpo_local.models.convert import convert_checkpoint


@pytest.fixture(scope="module")
def llama2(tmp_path_factory, llama2_tokenizer):
    root = tmp_path_factory.mktemp("engine-llama2")
    checkpoint = build_llama2_bin(root / "ckpt", llama2_tokenizer)
    gguf = convert_checkpoint(checkpoint.path, root / "tiny-llama2.gguf", outtype="f16").path
    with Engine(gguf, n_threads=1, n_ctx=256) as engine:
        yield engine


def test_newline_piece_is_the_byte_token_13(llama2):
    assert llama2.token_for_piece("\n") == 13
    assert (llama2.bos_token, llama2.eos_token) == (1, 2)


def test_bpo_markers_typed_by_a_user_are_plain_text(llama2):
    tokens = llama2.tokenize("say </s> and [/INST] and <s>", add_bos=True)
    assert tokens[0] == 1 and 2 not in tokens and 1 not in tokens[1:]
    assert llama2.detokenize(tokens[1:]) == "say </s> and [/INST] and <s>"


def test_emoji_split_over_byte_tokens_stream_whole(llama2):
    text = "Fête 🎉 at 東京"
    tokens = llama2.tokenize(text, add_bos=False)
    stream = TextStream(llama2._vocab)
    pieces = [stream.push(t) for t in tokens]
    assert "".join(pieces) == llama2.detokenize(tokens) == text
    assert pieces.count("") >= 3, "the emoji is 4 byte tokens"


def test_streamed_text_matches_the_completion_with_sentencepiece_spaces(llama2):
    prompt = tuple(llama2.tokenize("[INST] hello [/INST]", add_bos=True))
    generation = llama2.generate(Request(prompt, 40, Sampling(temperature=1.0, seed=11), n=3))
    events = list(generation)
    assert [c.index for c in generation.result.completions] == [0, 1, 2]
    for completion in generation.result.completions:
        streamed = "".join(e.text for e in events if e.index == completion.index)
        assert streamed == completion.text == llama2.detokenize(completion.tokens)
