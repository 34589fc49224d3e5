"""LlamaForCausalLM (Llama 1/2/3, BPO): metadata keys and the q/k rotary permutation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import gguf
import numpy as np

from ...errors import ConversionError
from .arch import OutputTensor, register
from .hparams import HParams
from .source import SourceTensor

_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


@register("LlamaForCausalLM")
class Llama:
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    llama_vocab_keys = True

    def write_kv(self, hp: HParams, writer: gguf.GGUFWriter) -> None:
        writer.add_vocab_size(hp.vocab_size)
        write_sizes(hp, writer, block_count_first=False)
        write_norm_and_heads(hp, writer)
        writer.add_rope_dimension_count(hp.rope_dim)
        write_rope_scaling(hp, writer)

    def tensors(self, hp: HParams, source: Iterable[SourceTensor]) -> Iterator[OutputTensor]:
        if (factors := _llama3_rope_factors(hp)) is not None:
            name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
            yield OutputTensor(name, factors.shape, lambda: factors, "rope_scaling")
        names = gguf.get_tensor_name_map(self.gguf_arch, hp.num_hidden_layers)
        for tensor in source:
            if tensor.name.endswith(_SKIPPED_SUFFIXES):
                continue
            new_name = names.get_name(tensor.name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ConversionError(f"unexpected tensor {tensor.name} in {tensor.file.name} for {hp.architecture}")
            yield OutputTensor(new_name, tensor.shape, self._loader(hp, tensor), tensor.name)

    @staticmethod
    def _loader(hp: HParams, tensor: SourceTensor):
        """HF stores q/k with rotate_half's layout; llama.cpp expects interleaved pairs."""
        if tensor.name.endswith(("q_proj.weight", "q_proj.bias")):
            return lambda: permute(tensor.load(), hp.num_attention_heads)
        if tensor.name.endswith(("k_proj.weight", "k_proj.bias")):
            return lambda: permute(tensor.load(), hp.num_key_value_heads)
        return tensor.load


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from [first halves | second halves] to interleaved pairs."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def write_sizes(hp: HParams, writer: gguf.GGUFWriter, *, block_count_first: bool) -> None:
    """Context, widths, layers and heads, in the order llama.cpp's Llama converter (block count after the
    widths) or its ``TextModel`` (block count first) writes them."""
    if block_count_first:
        writer.add_block_count(hp.num_hidden_layers)
    if hp.max_position_embeddings is not None:
        writer.add_context_length(hp.max_position_embeddings)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_feed_forward_length(hp.intermediate_size)
    if not block_count_first:
        writer.add_block_count(hp.num_hidden_layers)
    writer.add_head_count(hp.num_attention_heads)
    writer.add_head_count_kv(hp.num_key_value_heads)


def write_norm_and_heads(hp: HParams, writer: gguf.GGUFWriter) -> None:
    """RoPE base, RMS norm epsilon and an explicit head size."""
    if hp.rope_theta is not None:
        writer.add_rope_freq_base(hp.rope_theta)
    if hp.rms_norm_eps is not None:
        writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    if hp.head_dim is not None:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)


def write_rope_scaling(hp: HParams, writer: gguf.GGUFWriter) -> None:
    """Linear and yarn scaling keys, as llama.cpp's ``TextModel`` writes them (Llama, Qwen2)."""
    rope = hp.rope_scaling
    if rope is None or rope.factor is None or rope.type not in ("linear", "yarn"):
        return  # llama3 scaling is the rope_freqs tensor; others have no llama keys
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if rope.type == "linear" else gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(rope.factor)
    if rope.type == "yarn":
        if rope.original_max_position_embeddings is None:
            raise ConversionError("yarn rope scaling needs original_max_position_embeddings in config.json")
        writer.add_rope_scaling_orig_ctx_len(rope.original_max_position_embeddings)
        for value, add in ((rope.extrapolation_factor, writer.add_rope_scaling_yarn_ext_factor),
                           (rope.attention_factor, writer.add_rope_scaling_yarn_attn_factor),
                           (rope.beta_fast, writer.add_rope_scaling_yarn_beta_fast),
                           (rope.beta_slow, writer.add_rope_scaling_yarn_beta_slow)):
            if value is not None:
                add(value)


def _llama3_rope_factors(hp: HParams) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3.1 style rope scaling (llama.cpp's ``rope_freqs``)."""
    rope = hp.rope_scaling
    if rope is None or rope.type != "llama3":
        return None
    base, dim = hp.rope_theta or 10000.0, hp.rope_dim
    factor = rope.factor or 8.0
    low, high = rope.low_freq_factor or 1.0, rope.high_freq_factor or 4.0
    old_ctx = rope.original_max_position_embeddings or 8192
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)
