"""A model's own Jinja chat template rendered as transformers' ``apply_chat_template`` renders it.

Same environment (sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls), the same ``tojson`` filter
and ``raise_exception`` / ``strftime_now`` globals, ``add_generation_prompt`` set: a preset that wraps the
prompt in chat turns (MePO, PAS) sees the text its authors' transformers code produced.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from .errors import UsageError


def render(template: str, messages: list[dict[str, str]], *, bos_token: str, eos_token: str) -> str:
    """``messages`` through ``template``, ending with the assistant turn's opening."""
    import jinja2

    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                                          eos_token=eos_token, tools=None, documents=None)
    except jinja2.TemplateError as exc:
        raise UsageError(f"the model's chat template fails on this prompt: {exc}") from None


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"the model's chat template is not valid Jinja ({exc}); rebuild the model") from None
