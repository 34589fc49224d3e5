"""Qwen2ForCausalLM (Qwen2, Qwen2.5; PAS-7B, MePO): biased q/k/v, NEOX rotary, so no q/k permutation.

The keys are those llama.cpp's ``Qwen2Model`` (``conversion/qwen.py``, through ``TextModel``) writes;
tensors keep Llama's names (gguf-py maps the biases too) and pass through unchanged, so F16 ones are the
checkpoint's stored bytes. Tied embeddings simply have no ``lm_head.weight``: llama.cpp's qwen2 graph
then uses ``token_embd`` as the output.
"""

from __future__ import annotations

import gguf

from .arch import register
from .hparams import HParams
from .llama import Llama, write_norm_and_heads, write_rope_scaling, write_sizes
from .source import SourceTensor


@register("Qwen2ForCausalLM")
class Qwen2(Llama):
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    llama_vocab_keys = False

    def write_kv(self, hp: HParams, writer: gguf.GGUFWriter) -> None:
        write_sizes(hp, writer, block_count_first=True)
        write_rope_scaling(hp, writer)
        write_norm_and_heads(hp, writer)

    @staticmethod
    def _loader(hp: HParams, tensor: SourceTensor):
        """HF's rotate_half layout is llama.cpp's NEOX rope: every tensor is used as stored."""
        return tensor.load
