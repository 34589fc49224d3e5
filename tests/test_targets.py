"""Chat targets: a local GGUF with its own chat template (SmolLM2, real llama.cpp) and an OpenAI-compatible
server (a real llama-server on 127.0.0.1), as /compare and eval use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _llama_server import LlamaServer, free_port

from bpo_local.errors import ModelLoadError, TargetError, TargetUnreachable
from bpo_local.targets import ChatSettings, complete, open_target, user_message
from bpo_local.targets.local import LocalChat, format_chat
from bpo_local.targets.openai import OpenAIChat, api_base

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def chat(smollm2_gguf: Path) -> Iterator[LocalChat]:
    with LocalChat(smollm2_gguf, threads=2, ctx=1024) as model:
        yield model


def test_chat_template_rendered_with_jinja() -> None:
    text = format_chat(CHATML, user_message("What is 2+2?"))
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    llama2 = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert format_chat(llama2, user_message("hi"), bos_token="<s>") == "<s>[INST] hi [/INST]"


def test_chat_template_falls_back_to_llama_cpp_then_fails_clearly() -> None:
    # Jinja cannot parse this, but llama.cpp recognises ChatML by its markers.
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert format_chat("{% broken <|im_start|> <|im_end|>", user_message("hi")) == expected
    with pytest.raises(ModelLoadError, match="cannot be rendered"):
        format_chat("{% broken and unknown", user_message("hi"))
    with pytest.raises(ModelLoadError):
        format_chat("{{ raise_exception('no') }}", user_message("hi"))


def test_prompt_follows_the_gguf_template_with_its_default_system_message(chat: LocalChat) -> None:
    assert chat.format(user_message("Hi <b>")) == f"{SYSTEM}<|im_start|>user\nHi <b><|im_end|>\n<|im_start|>assistant\n"


def test_a_system_message_replaces_the_default_one(chat: LocalChat) -> None:
    messages = [{"role": "system", "content": "Judge."}, *user_message("Hi")]
    expected = "<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert chat.format(messages) == expected


def test_answer_stops_at_the_end_of_turn_and_reuses_the_template_prefix(chat: LocalChat) -> None:
    first = chat.chat(user_message(QUESTION), ChatSettings(max_tokens=40))
    pieces = list(first)
    answer = first.result
    assert answer.finish_reason == "stop" and "<|im_end|>" not in answer.text
    assert "".join(pieces).strip() == answer.text and "Paris" in answer.text
    second = chat.chat(user_message("What is the capital of Italy?"), ChatSettings(max_tokens=2))
    assert "".join(second) and second.result.finish_reason == "length"
    system_tokens = len(chat._engine.tokenize(SYSTEM, add_bos=False, parse_special=True))
    assert second.result.timings.cached_prompt_tokens >= system_tokens


def test_a_seeded_sampled_answer_repeats(chat: LocalChat) -> None:
    settings = ChatSettings(max_tokens=24, temperature=0.7, seed=7)
    prompt = user_message("Tell me something about cats.")
    complete(chat, prompt, settings)  # caches the prompt: both answers below start from the same cache state
    first, again = complete(chat, prompt, settings), complete(chat, prompt, settings)
    assert first.timings.cached_prompt_tokens == again.timings.cached_prompt_tokens > 0
    assert first.text == again.text


def test_cancel_keeps_the_partial_answer(chat: LocalChat) -> None:
    stream = chat.chat(user_message("Write a long poem about the sea."), ChatSettings(max_tokens=200))
    for count, _ in enumerate(stream, 1):
        if count == 3:
            stream.cancel()
    assert stream.result.finish_reason == "cancelled" and stream.result.text
    assert len(chat._engine.tokenize(stream.result.text, add_bos=False)) <= 5


def test_identity_is_the_gguf_sha256(chat: LocalChat, smollm2_gguf: Path) -> None:
    import hashlib

    assert chat.identity() == f"gguf:{hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()}"


def test_api_base_accepts_the_server_or_its_v1() -> None:
    assert api_base("http://h:1") == api_base("http://h:1/") == api_base("http://h:1/v1/") == "http://h:1/v1"


def test_server_target_streams_an_answer_and_names_the_served_model(llama_server: LlamaServer) -> None:
    with open_target(llama_server.url) as target:
        assert isinstance(target, OpenAIChat) and target.name  # the first model the server lists
        assert target.identity() == f"openai:{llama_server.url}/v1 {target.name}"
        stream = target.chat(user_message(QUESTION), ChatSettings(max_tokens=40, seed=1))
        pieces = list(stream)
        answer = stream.result
        assert len(pieces) > 1 and "".join(pieces).strip() == answer.text and "Paris" in answer.text
        assert answer.finish_reason == "stop" and answer.timings.total_seconds > 0
        short = complete(target, user_message(QUESTION), ChatSettings(max_tokens=2))
        assert short.finish_reason == "length" and short.text


def test_server_target_with_a_named_model_and_cancel(llama_server: LlamaServer) -> None:
    with OpenAIChat(f"{llama_server.url}/v1", model="anything") as target:
        assert target.name == "anything"  # llama-server serves its one model under any name
        stream = target.chat(user_message("Write a long poem about the sea."), ChatSettings(max_tokens=200))
        for count, _ in enumerate(stream, 1):
            if count == 2:
                stream.cancel()
        assert stream.result.finish_reason == "cancelled" and stream.result.text


def test_server_errors_are_one_fact(llama_server: LlamaServer) -> None:
    port = free_port()
    with pytest.raises(TargetUnreachable, match=f"cannot reach http://127.0.0.1:{port}/v1/models"):
        open_target(f"http://127.0.0.1:{port}")
    with open_target(llama_server.url) as target:
        too_long = user_message("word " * 9000)  # beyond the server's 8192-token context: refused at once
        with pytest.raises(TargetError, match="answered HTTP 400: request .* exceeds the available context size"):
            complete(target, too_long, ChatSettings(max_tokens=4))


def test_killed_server_mid_answer_is_unreachable(smollm2_gguf: Path, tmp_path: Path) -> None:
    with LlamaServer.start(smollm2_gguf, slots=1, log_dir=tmp_path) as server:
        target = open_target(server.url)
        stream = target.chat(user_message("Write a long poem about the sea."), ChatSettings(max_tokens=400))
        with pytest.raises(TargetUnreachable):
            for count, _ in enumerate(stream, 1):
                if count == 2:
                    server.kill()
        target.close()
