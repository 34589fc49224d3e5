"""The /compare target: a GGUF chat model answering with its own chat template (SmolLM2, real llama.cpp)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bpo_local.chat import ChatModel

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def chat(smollm2_gguf: Path) -> Iterator[ChatModel]:
    with ChatModel(smollm2_gguf, threads=2, ctx=1024) as model:
        yield model


def test_prompt_follows_the_gguf_template_with_its_default_system_message(chat: ChatModel) -> None:
    assert chat.format("Hi <b>") == f"{SYSTEM}<|im_start|>user\nHi <b><|im_end|>\n<|im_start|>assistant\n"


def test_answer_stops_at_the_end_of_turn_and_reuses_the_template_prefix(chat: ChatModel) -> None:
    first = chat.answer("What is the capital of France? Answer in one sentence.", max_tokens=40)
    pieces = list(first)
    answer = first.result
    assert answer.finish_reason == "stop" and "<|im_end|>" not in answer.text
    assert "".join(pieces).strip() == answer.text and "Paris" in answer.text
    second = chat.answer("What is the capital of Italy?", max_tokens=2)
    assert "".join(second) and second.result.finish_reason == "length"
    system_tokens = len(chat._engine.tokenize(SYSTEM, add_bos=False, parse_special=True))
    assert second.result.timings.cached_prompt_tokens >= system_tokens


def test_cancel_keeps_the_partial_answer(chat: ChatModel) -> None:
    stream = chat.answer("Write a long poem about the sea.", max_tokens=200)
    for count, _ in enumerate(stream, 1):
        if count == 3:
            stream.cancel()
    assert stream.result.finish_reason == "cancelled" and stream.result.text
    assert len(chat._engine.tokenize(stream.result.text, add_bos=False)) <= 5
