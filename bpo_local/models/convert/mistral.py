"""MistralForCausalLM: the Llama layout (GQA, sliding window unused by llama.cpp's llama arch)."""

from __future__ import annotations

from .arch import register
from .llama import Llama


@register("MistralForCausalLM")
class Mistral(Llama):
    """Same metadata and tensors as Llama; llama.cpp converts Mistral checkpoints to ``llama``."""
