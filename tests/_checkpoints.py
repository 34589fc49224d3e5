"""Builders of tiny random HF checkpoints laid out as real Hub repos (config, tokenizer, weights).

Weights are generated in float32 by ``random_llama`` and stored in the checkpoint's precision; the
stored values (rounded back to float32) are returned so tests can compute an exact reference.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import _torch_zip as torch_zip
import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict
    weights: dict[str, np.ndarray]
    """HF-named weights as float32, equal to what the files store."""


def llama_config(vocab_size: int, **overrides: object) -> dict:
    """A Llama-2 style config.json (2023 spelling: torch_dtype, rope_theta) for the tiny model."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": vocab_size,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **overrides,
    }


def random_llama(vocab_size: int, *, seed: int, tied: bool = False) -> dict[str, np.ndarray]:
    """Random HF-named Llama weights (float32), scaled so activations stay in a sane range."""
    rng = np.random.default_rng(seed)
    head_dim = HIDDEN // HEADS

    def w(*shape: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(vocab_size, HIDDEN, scale=0.5)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": 1 + w(HIDDEN, scale=0.1),
            p + "self_attn.q_proj.weight": w(HEADS * head_dim, HIDDEN, scale=0.25),
            p + "self_attn.k_proj.weight": w(KV_HEADS * head_dim, HIDDEN, scale=0.25),
            p + "self_attn.v_proj.weight": w(KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.o_proj.weight": w(HIDDEN, HEADS * head_dim),
            p + "post_attention_layernorm.weight": 1 + w(HIDDEN, scale=0.1),
            p + "mlp.gate_proj.weight": w(FFN, HIDDEN),
            p + "mlp.up_proj.weight": w(FFN, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, FFN),
        }
    weights["model.norm.weight"] = 1 + w(HIDDEN, scale=0.1)
    if not tied:
        weights["lm_head.weight"] = w(vocab_size, HIDDEN, scale=0.3)
    return weights


def stored(weights: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The float32 values a file of ``dtype`` (f32, f16, bf16) holds for ``weights``."""
    if dtype == "f16":
        return {k: v.astype(np.float16).astype(np.float32) for k, v in weights.items()}
    if dtype == "bf16":
        return {k: _bf16_bits_to_f32(_f32_to_bf16_bits(v)) for k, v in weights.items()}
    return dict(weights)


def encoded(value: np.ndarray, dtype: str) -> np.ndarray:
    """The elements a file of ``dtype`` (f32, f16, bf16) stores for ``value`` (bf16 as its uint16 bits)."""
    if dtype == "bf16":
        return _f32_to_bf16_bits(value)
    return value.astype(np.float16 if dtype == "f16" else np.float32)


def save_safetensors(path: Path, weights: dict[str, np.ndarray], dtype: str) -> None:
    """Write a .safetensors file (F32, F16 or BF16) without torch."""
    blobs, header, offset = [], {}, 0
    for name, value in weights.items():
        raw = encoded(value, dtype).tobytes()
        header[name] = {"dtype": dtype.upper(), "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)


TORCH_STORAGES = {"f16": "HalfStorage", "bf16": "BFloat16Storage", "f32": "FloatStorage"}


def save_torch(path: Path, weights: dict[str, np.ndarray], dtype: str) -> None:
    """Write a PyTorch zip .bin (fp16, bf16 or fp32 storages, as torch.save lays it out) without torch."""
    torch_zip.save(path, {k: torch_zip.tensor(encoded(v, dtype), TORCH_STORAGES[dtype]) for k, v in weights.items()})


def write_sharded(folder: Path, weights: dict[str, np.ndarray], dtype: str, *, fmt: str, shards: int) -> None:
    """Split ``weights`` over ``shards`` files named like transformers does, plus the index json."""
    names = list(weights)
    stem, ext, save = (("model", "safetensors", save_safetensors) if fmt == "safetensors"
                       else ("pytorch_model", "bin", save_torch))
    weight_map = {}
    for i in range(shards):
        part = {n: weights[n] for n in names[i::shards]}
        file = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        save(folder / file, part, dtype)
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {"total_size": sum(v.size for v in weights.values())}, "weight_map": weight_map}
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))


def write_json(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False))


def llama2_tokenizer_files(folder: Path, tokenizer_model: Path, *, pad: bool) -> None:
    """Llama-2's tokenizer.model and HF tokenizer json files (optionally with an added [PAD])."""
    shutil.copy(tokenizer_model, folder / "tokenizer.model")
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
               for i, t in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))}
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "legacy": False, "model_max_length": 4096,
              "tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": decoder}
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if pad:
        decoder["32000"] = {**decoder["0"], "content": "[PAD]"}
        config["pad_token"] = special["pad_token"] = "[PAD]"
        write_json(folder, "added_tokens.json", {"[PAD]": 32000})
    write_json(folder, "tokenizer_config.json", config)
    write_json(folder, "special_tokens_map.json", special)


def build_llama2_bin(folder: Path, tokenizer_model: Path) -> Checkpoint:
    """(a) Llama-2 / BPO layout: SentencePiece, fp16 PyTorch .bin in 2 shards + index."""
    folder.mkdir(parents=True)
    config = llama_config(32000)
    del config["rope_theta"]  # old Llama-2 configs omit it; llama.cpp then uses 10000
    weights = stored(random_llama(32000, seed=1), "f16")
    inv_freq = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": np.ones(8, np.float32) for i in range(LAYERS)}
    write_sharded(folder, weights | inv_freq, "f16", fmt="torch", shards=2)
    write_json(folder, "config.json", config)
    write_json(folder, "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    llama2_tokenizer_files(folder, tokenizer_model, pad=False)
    return Checkpoint(folder, config, weights)


def build_llama2_pad_safetensors(folder: Path, tokenizer_model: Path) -> Checkpoint:
    """(b) bf16 safetensors (2 shards), an added [PAD] token (vocab 32001), current config spelling."""
    folder.mkdir(parents=True)
    config = llama_config(32001, dtype="bfloat16", rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                          pad_token_id=32000)
    for old in ("torch_dtype", "rope_theta", "rope_scaling"):
        del config[old]
    weights = stored(random_llama(32001, seed=2), "bf16")
    write_sharded(folder, weights, "bf16", fmt="safetensors", shards=2)
    write_json(folder, "config.json", config)
    write_json(folder, "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000})
    llama2_tokenizer_files(folder, tokenizer_model, pad=True)
    return Checkpoint(folder, config, weights)


LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
LLAMA3_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
SMOLLM_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
"""SmolLM / SmolLM2's (HuggingFaceTB/SmolLM2-135M-Instruct tokenizer.json): digits one by one, then GPT-2."""


BPE_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "ll"), ("Ġ", "w")]
BPE_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def bos_template(bos: str, bos_id: int) -> dict:
    """Llama-3's tokenizer.json post-processor: BOS before the text (and before each of a pair)."""
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def build_bpe_tied(folder: Path) -> Checkpoint:
    """(c) Llama-3 style byte-level BPE tokenizer.json, tied embeddings, f16 single safetensors."""
    folder.mkdir(parents=True)
    vocab = {c: i for i, c in enumerate(byte_level_alphabet())}
    for a, b in BPE_MERGES:
        vocab[a + b] = len(vocab)
    specials = {t: len(vocab) + i for i, t in enumerate(BPE_SPECIALS)}
    vocab_size = len(vocab) + len(specials) + 3  # config larger than the tokenizer: [PAD{i}] fill-in
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in specials.items()],
        "normalizer": None,
        "pre_tokenizer": LLAMA3_PRE_TOKENIZER,
        "post_processor": bos_template("<|begin_of_text|>", specials["<|begin_of_text|>"]),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for a, b in BPE_MERGES]},
    }
    write_json(folder, "tokenizer.json", tokenizer)
    write_json(folder, "tokenizer_config.json", {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True})
    config = llama_config(vocab_size, tie_word_embeddings=True, torch_dtype="float16",
                          bos_token_id=specials["<|begin_of_text|>"], eos_token_id=specials["<|end_of_text|>"])
    weights = stored(random_llama(vocab_size, seed=3, tied=True), "f16")
    save_safetensors(folder / "model.safetensors", weights, "f16")
    write_json(folder, "config.json", config)
    write_json(folder, "generation_config.json", {"bos_token_id": config["bos_token_id"],
                                                  "eos_token_id": config["eos_token_id"]})
    return Checkpoint(folder, config, weights)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


def read_gguf_kv(path: Path) -> dict[str, object]:
    """The metadata of a GGUF file (a small parser: gguf.GGUFReader takes ~20 s on a 128k vocabulary)."""
    data = path.read_bytes()
    pos = 24  # magic, version, tensor count

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return data[pos - n:pos].decode("utf-8")

    def value(kind: int):
        if kind == 8:
            return string()
        if kind == 9:
            item, n = take("<I"), take("<Q")
            return [value(item) for _ in range(n)]
        return take(_GGUF_SCALARS[kind])

    assert data[:4] == b"GGUF"
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("<I"))
    return kv


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    n = x.astype(np.float32).view(np.uint32)
    return ((n.astype(np.uint64) + 0x7FFF + ((n >> 16) & 1)) >> 16).astype(np.uint16)


def _bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def tokenizer_json_from_vocab_gguf(kv: dict[str, object], *, pre_tokenizer: dict, post_processor: dict,
                                   specials_in_vocab: bool, normalizer: dict | None = None,
                                   decoder: dict | None = None) -> dict:
    """A tokenizer.json holding a llama.cpp GGUF's vocabulary, merges and special (CONTROL) tokens."""
    tokens, types, merges = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.merges"]
    return {
        "version": "1.0", "truncation": None, "padding": None, "normalizer": normalizer,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == 3],
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder or {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {t: i for i, t in enumerate(tokens) if (specials_in_vocab or types[i] != 3)
                            and types[i] != 4},
                  "merges": [m.split(" ") for m in merges]},
    }


def build_from_vocab_gguf(folder: Path, vocab_gguf: Path, *, pre_tokenizer: dict = LLAMA3_PRE_TOKENIZER,
                          post_processor: dict | None = None, tokenizer_config: dict | None = None,
                          specials_in_vocab: bool = False) -> Checkpoint:
    """A tiny tied-embedding Llama whose tokenizer.json is rebuilt from a llama.cpp GGUF's vocabulary
    (e.g. ggml-vocab-llama-bpe.gguf: the real Llama-3 vocabulary, merges and special tokens), with the
    given pre-tokenizer and post-processor (by default Llama-3's: BOS, then the text);
    ``tokenizer_config`` adds to tokenizer_config.json.
    ``specials_in_vocab``: the BPE vocab lists the special tokens too (SmolLM's do; Llama-3's do not)."""
    kv = read_gguf_kv(vocab_gguf)
    tokens = kv["tokenizer.ggml.tokens"]
    bos, eos = tokens[kv["tokenizer.ggml.bos_token_id"]], tokens[kv["tokenizer.ggml.eos_token_id"]]
    folder.mkdir(parents=True)
    tokenizer = tokenizer_json_from_vocab_gguf(kv, pre_tokenizer=pre_tokenizer,
                                               post_processor=post_processor or bos_template(bos, tokens.index(bos)),
                                               specials_in_vocab=specials_in_vocab)
    write_json(folder, "tokenizer.json", tokenizer)
    write_json(folder, "tokenizer_config.json", {"bos_token": bos, "eos_token": eos,
                                                 "tokenizer_class": "PreTrainedTokenizerFast",
                                                 **(tokenizer_config or {})})
    config = llama_config(len(tokens), tie_word_embeddings=True, bos_token_id=tokens.index(bos),
                          eos_token_id=tokens.index(eos))
    weights = stored(random_llama(len(tokens), seed=4, tied=True), "f16")
    save_safetensors(folder / "model.safetensors", weights, "f16")
    write_json(folder, "config.json", config)
    return Checkpoint(folder, config, weights)


def build_smollm2(folder: Path, smollm2_gguf: Path) -> Checkpoint:
    """SmolLM2's tokenizer files rebuilt from its GGUF (vocabulary, merges, specials, chat template, the
    tokenizer_config.json settings of HuggingFaceTB/SmolLM2-135M-Instruct) on a tiny random Llama."""
    template = read_gguf_kv(smollm2_gguf)["tokenizer.chat_template"]
    return build_from_vocab_gguf(
        folder, smollm2_gguf, pre_tokenizer=SMOLLM_PRE_TOKENIZER, specials_in_vocab=True,
        post_processor={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        tokenizer_config={"add_prefix_space": False, "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                          "clean_up_tokenization_spaces": False, "model_max_length": 8192,
                          "tokenizer_class": "GPT2Tokenizer", "vocab_size": 49152, "chat_template": template})


QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
QWEN2_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False}, QWEN2_BYTE_LEVEL]}
"""Qwen2's tokenizer.json (Qwen/Qwen2-7B-Instruct): NFC, then this split (digits one by one), then bytes."""


def qwen2_config(vocab_size: int, *, tied: bool, dtype: str) -> dict:
    """A Qwen2-7B-Instruct style config.json for the tiny model (bos <|endoftext|>, eos <|im_end|>)."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": vocab_size,
        "max_position_embeddings": 256, "max_window_layers": LAYERS, "sliding_window": 256,
        "use_sliding_window": False, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
        "tie_word_embeddings": tied, "torch_dtype": dtype, "use_cache": True,
        "bos_token_id": 151643, "eos_token_id": 151645,
    }


def random_qwen2(vocab_size: int, *, seed: int, tied: bool) -> dict[str, np.ndarray]:
    """Random HF-named Qwen2 weights (float32): Llama's plus the q/k/v biases."""
    weights = random_llama(vocab_size, seed=seed, tied=tied)
    rng = np.random.default_rng(seed + 1000)
    for i in range(LAYERS):
        for proj in ("q_proj", "k_proj", "v_proj"):
            rows = weights[f"model.layers.{i}.self_attn.{proj}.weight"].shape[0]
            weights[f"model.layers.{i}.self_attn.{proj}.bias"] = (rng.standard_normal(rows) * 0.2).astype(np.float32)
    return weights


def build_qwen2(folder: Path, qwen2_vocab_gguf: Path, *, tied: bool, dtype: str, shards: int = 1) -> Checkpoint:
    """A tiny random Qwen2 laid out as Qwen/Qwen2-7B-Instruct is: the real Qwen2 vocabulary and merges
    (llama.cpp's ggml-vocab-qwen2.gguf) as tokenizer.json, its chat template, biased q/k/v, weights in
    ``dtype`` (f16, bf16) safetensors in ``shards`` files."""
    kv = read_gguf_kv(qwen2_vocab_gguf)
    tokens = kv["tokenizer.ggml.tokens"]
    folder.mkdir(parents=True)
    tokenizer = tokenizer_json_from_vocab_gguf(kv, pre_tokenizer=QWEN2_PRE_TOKENIZER, post_processor=QWEN2_BYTE_LEVEL,
                                               specials_in_vocab=False, normalizer={"type": "NFC"},
                                               decoder=QWEN2_BYTE_LEVEL)
    tokenizer["model"] |= {"continuing_subword_prefix": "", "end_of_word_suffix": "", "ignore_merges": False}
    write_json(folder, "tokenizer.json", tokenizer)
    specials = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
                for t in tokenizer["added_tokens"]}
    write_json(folder, "tokenizer_config.json", {
        "add_prefix_space": False, "added_tokens_decoder": specials,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "chat_template": kv["tokenizer.chat_template"], "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 32768, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})
    config = qwen2_config(len(tokens), tied=tied, dtype={"f16": "float16", "bf16": "bfloat16"}[dtype])
    weights = stored(random_qwen2(len(tokens), seed=5, tied=tied), dtype)
    if shards == 1:
        save_safetensors(folder / "model.safetensors", weights, dtype)
    else:
        write_sharded(folder, weights, dtype, fmt="safetensors", shards=shards)
    write_json(folder, "config.json", config)
    write_json(folder, "generation_config.json", {"bos_token_id": 151643, "eos_token_id": [151645, 151643],
                                                  "pad_token_id": 151643})
    return Checkpoint(folder, config, weights)
