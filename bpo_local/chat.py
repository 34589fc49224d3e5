"""A target chat model for /compare: answers one prompt with the GGUF's own chat template.

The template is rendered with Jinja (as transformers' ``apply_chat_template`` does); a template Jinja
cannot render falls back to llama.cpp's built-in recognizer (``llama_chat_apply_template``).
Generation stops at the model's end-of-generation tokens, as llama.cpp's vocabulary lists them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ModelLoadError

if TYPE_CHECKING:
    from .backend import ModelInfo, Timings
    from .backends.llamacpp import Engine, Generation

def format_chat(template: str, prompt: str, *, bos_token: str = "", eos_token: str = "") -> str:
    """``prompt`` as the single user message of ``template``, ready for the assistant's answer."""
    messages = [{"role": "user", "content": prompt}]
    try:
        return _render_jinja(template, messages, bos_token, eos_token)
    except Exception:  # any template error: try llama.cpp's recognizer before giving up
        pass
    text = _render_builtin(template, messages)
    if text is None:
        raise ModelLoadError("the target model's chat template cannot be rendered; use another chat model as target")
    return text


def _render_jinja(template: str, messages: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                                            eos_token=eos_token, raise_exception=raise_exception)


def _render_builtin(template: str, messages: list[dict[str, str]]) -> str | None:
    import llama_cpp.llama_cpp as lib

    chat = (lib.llama_chat_message * len(messages))(
        *(lib.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages))
    size = 2 * sum(len(m["content"]) for m in messages) + 256
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(template.encode(), chat, len(messages), True, buf, size)
        if n < 0:
            return None
        if n <= size:
            return buf.raw[:n].decode("utf-8", "replace")
        size = n
    return None


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    finish_reason: str
    timings: Timings


class ChatStream:
    """Iterate for pieces of the answer as they are generated; ``result`` once done or cancelled."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation

    def __iter__(self) -> Iterator[str]:
        for event in self._generation:
            if event.text:
                yield event.text

    def cancel(self) -> None:
        self._generation.cancel()

    @property
    def result(self) -> ChatAnswer:
        result = self._generation.result
        (completion,) = result.completions
        return ChatAnswer(completion.text.strip(), completion.finish_reason, result.timings)


class ChatModel:
    """A local GGUF chat model, loaded once; ``answer()`` many prompts (the template prefix is cached)."""

    def __init__(self, model: str | os.PathLike[str], *, gpu_layers: int | None = None, ctx: int | None = None,
                 threads: int | None = None, verbose: bool = False) -> None:
        from .backends.llamacpp import Engine

        self._engine: Engine = Engine(model, n_ctx=ctx, n_gpu_layers=gpu_layers, n_threads=threads, verbose=verbose)
        template = self.info.chat_template
        if not template:
            self.close()
            raise ModelLoadError(f"{self.name} has no chat template; use a chat (instruct) model as the target")
        self._template = template

    @property
    def info(self) -> ModelInfo:
        return self._engine.info

    @property
    def name(self) -> str:
        return self.info.name

    def format(self, prompt: str) -> str:
        """The text the model sees for ``prompt``: its chat template with one user message."""
        return format_chat(self._template, prompt, bos_token=self._special_text(self._engine.bos_token),
                           eos_token=self._special_text(self._engine.eos_token))

    def answer(self, prompt: str, *, max_tokens: int = 512, temperature: float = 0.0,
               seed: int | None = None) -> ChatStream:
        """Start answering ``prompt`` (greedy by default, so two prompts are compared fairly)."""
        from .backend import Request, Sampling

        engine = self._engine
        tokens = engine.tokenize(self.format(prompt), add_bos=False, parse_special=True)
        if self._wants_bos() and (not tokens or tokens[0] != engine.bos_token):
            tokens.insert(0, engine.bos_token)  # type: ignore[arg-type]
        request = Request(prompt=tuple(tokens), max_new_tokens=max_tokens,
                          sampling=Sampling(temperature=temperature, seed=seed), stop_tokens=engine.eog_tokens)
        return ChatStream(engine.generate(request))

    def _wants_bos(self) -> bool:
        return (self._engine.bos_token is not None
                and self.info.metadata.get("tokenizer.ggml.add_bos_token", "false").lower() == "true")

    def _special_text(self, token: int | None) -> str:
        return "" if token is None else self._engine.detokenize([token], skip_special=False)

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> ChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
