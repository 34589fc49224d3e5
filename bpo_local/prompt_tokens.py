"""A preset's prompt as the token ids a backend evaluates: BOS + the raw template's text, or the preset's turns
rendered through the model's own chat template. Shared by the optimizer and the quantization check."""

from __future__ import annotations

from .backend import Backend
from .errors import UsageError
from .presets import Preset, build_prompt


def prompt_tokens(backend: Backend, prompt: str, preset: Preset) -> tuple[int, ...]:
    """BOS + the raw template's text (parsed as plain text, as BPO's reference does), or the chat turns
    rendered through the model's own chat template (its special tokens parsed, as transformers does)."""
    if preset.wrap == "raw":
        return tuple(backend.tokenize(build_prompt(prompt, preset), add_bos=True))
    from .chat_template import render

    info = backend.info
    if not info.chat_template:
        raise UsageError(f"the {preset.name} preset wraps the prompt in the model's chat template, and "
                         f"{info.name} has none; convert the model with its tokenizer_config.json")
    messages = [{"role": "system", "content": preset.system}] if preset.system is not None else []
    messages.append({"role": "user", "content": build_prompt(prompt, preset)})
    bos = backend.detokenize(backend.tokenize("", add_bos=True), skip_special=False)
    eos = backend.detokenize([backend.eos_token], skip_special=False)
    text = render(info.chat_template, messages, bos_token=bos, eos_token=eos)
    return tuple(backend.tokenize(text, add_bos=False, parse_special=True))
