"""Hyper-parameters of a checkpoint, parsed once from ``config.json`` with every alias resolved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConversionError

_ALIASES: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size", "n_vocab"),
    "hidden_size": ("hidden_size", "n_embd", "dim"),
    "intermediate_size": ("intermediate_size", "n_inner", "hidden_dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "n_kv_heads", "n_head_kv"),
    "max_position_embeddings": ("max_position_embeddings", "n_ctx", "n_positions", "max_sequence_length"),
    "rms_norm_eps": ("rms_norm_eps", "norm_eps"),
    "dtype": ("dtype", "torch_dtype"),
}


@dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling as HF configs state it (``rope_scaling`` in 2023, ``rope_parameters`` now)."""

    type: str
    """``linear``, ``yarn``, ``llama3``, ``dynamic``, ``longrope`` ... (``default`` is no scaling)."""
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    extrapolation_factor: float | None = None
    attention_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None


@dataclass(frozen=True)
class HParams:
    """The decoder-only transformer hyper-parameters the converters need."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int | None
    rms_norm_eps: float | None
    rope_theta: float | None
    rope_scaling: RopeScaling | None
    head_dim: int | None
    tie_word_embeddings: bool
    dtype: str | None
    """The checkpoint's stored precision as config.json states it (``float16``, ``bfloat16``...)."""

    @property
    def rope_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def load(cls, checkpoint: Path) -> HParams:
        """Parse ``checkpoint/config.json``; a missing or unreadable one is a ConversionError."""
        path = checkpoint / "config.json"
        if not path.is_file():
            raise ConversionError(f"no config.json in {checkpoint}: point at a Hugging Face checkpoint folder")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConversionError(f"cannot read {path}: {exc}; re-download the checkpoint") from None
        if not isinstance(config, dict):
            raise ConversionError(f"{path} is not a JSON object; re-download the checkpoint")
        return cls.from_config(config, source=str(path))

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> HParams:
        if isinstance(config.get("text_config"), dict):
            config = {**config, **config["text_config"]}
        archs = config.get("architectures") or []
        arch = archs[0] if archs and isinstance(archs[0], str) else ""

        def find(key: str, default: Any = None, *, required: bool = False) -> Any:
            for alias in _ALIASES.get(key, (key,)):
                if config.get(alias) is not None:
                    return config[alias]
            if required:
                raise ConversionError(f"{source} has no {key!r}; the checkpoint's config is incomplete")
            return default

        n_head = int(find("num_attention_heads", required=True))
        rope_params = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if "full_attention" in rope_params:
            rope_params = rope_params["full_attention"]
        rope_theta = rope_params.get("rope_theta", config.get("rope_theta"))
        return cls(
            architecture=arch,
            vocab_size=int(find("vocab_size", required=True)),
            hidden_size=int(find("hidden_size", required=True)),
            intermediate_size=int(find("intermediate_size", required=True)),
            num_hidden_layers=int(find("num_hidden_layers", required=True)),
            num_attention_heads=n_head,
            num_key_value_heads=int(find("num_key_value_heads", n_head)),
            max_position_embeddings=_opt_int(find("max_position_embeddings")),
            rms_norm_eps=_opt_float(find("rms_norm_eps")),
            rope_theta=_opt_float(rope_theta),
            rope_scaling=_rope_scaling(rope_params, config),
            head_dim=_opt_int(config.get("head_dim")),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            dtype=find("dtype"),
        )


def _rope_scaling(params: dict[str, Any], config: dict[str, Any]) -> RopeScaling | None:
    kind = params.get("rope_type", params.get("type"))
    if kind in (None, "default"):
        return None
    return RopeScaling(
        type=str(kind).lower(),
        factor=_opt_float(params.get("factor")),
        original_max_position_embeddings=_opt_int(
            params.get("original_max_position_embeddings", config.get("original_max_position_embeddings"))),
        low_freq_factor=_opt_float(params.get("low_freq_factor")),
        high_freq_factor=_opt_float(params.get("high_freq_factor")),
        extrapolation_factor=_opt_float(params.get("extrapolation_factor")),
        attention_factor=_opt_float(params.get("attention_factor", params.get("attn_factor"))),
        beta_fast=_opt_float(params.get("beta_fast")),
        beta_slow=_opt_float(params.get("beta_slow")),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
