#!/usr/bin/env python3
"""Write a Llama-2-7B-shaped fp16 checkpoint with random weights (13.5 GB, 7 safetensors shards).

32 layers, hidden 4096, intermediate 11008, 32 heads, vocab 32000, the real Llama-2 tokenizer
and a Llama-2 config.json: the shapes BPO converts, without downloading BPO. numpy only (no
torch); the data is a 64 MB random pool XOR-ed with a fresh random word per 64 MB chunk, with
fp16 exponents capped so every value is finite and below 2 in magnitude. The tokenizer config carries
Llama-2-chat's chat template, so the converted model also serves as a local eval target or judge.

    python benchmarks/make_7b_checkpoint.py FOLDER

Needs 13.5 GB free; delete FOLDER when done.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _checkpoints import llama2_tokenizer_files, llama_config, write_json  # noqa: E402

HIDDEN, LAYERS, HEADS, FFN, VOCAB, SHARDS = 4096, 32, 32, 11008, 32000, 7
TOKENIZER = REPO.parent / "shared" / "fixtures" / "llama2-tokenizer.model"
_CHUNK_WORDS = 8 * 1024 * 1024
"""64 MB of uint64 per random chunk."""
_FINITE_F16 = np.uint64(0xBFFF_BFFF_BFFF_BFFF)
"""Clears each fp16's top exponent bit: exponents 0..15, so no inf/NaN and |x| < 2."""


def shapes_7b() -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of Llama-2-7B, in the order the shards store them."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (HIDDEN,), p + "mlp.down_proj.weight": (HIDDEN, FFN),
                   p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                   p + "post_attention_layernorm.weight": (HIDDEN,),
                   p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                   p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN)}
    return shapes | {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}


def build_7b_checkpoint(folder: Path) -> Path:
    """Write the checkpoint into ``folder`` (kept if already complete; built beside it, then renamed)."""
    if (folder / "config.json").is_file():
        add_chat_template(folder)  # one built before the template was added gets it too
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shapes = shapes_7b()
    nbytes = {name: 2 * int(np.prod(shape)) for name, shape in shapes.items()}
    rng = np.random.default_rng(0)
    random = _RandomBytes(rng)
    weight_map: dict[str, str] = {}
    for i, names in enumerate(_split(list(shapes), nbytes, SHARDS)):
        file = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        _write_shard(tmp / file, {n: shapes[n] for n in names}, random)
        weight_map |= dict.fromkeys(names, file)
    write_json(tmp, "model.safetensors.index.json",
               {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map})
    config = llama_config(VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=HEADS, intermediate_size=FFN, max_position_embeddings=4096)
    write_json(tmp, "config.json", config)
    write_json(tmp, "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    llama2_tokenizer_files(tmp, TOKENIZER, pad=False)
    add_chat_template(tmp)
    tmp.rename(folder)
    return folder


class _RandomBytes:
    """Random fp16 bit patterns, a chunk at a time, into one reused buffer."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._pool = rng.bit_generator.random_raw(_CHUNK_WORDS)
        self._buf = np.empty_like(self._pool)

    def chunk(self, nbytes: int) -> memoryview:
        np.bitwise_xor(self._pool, np.uint64(self._rng.bit_generator.random_raw()), out=self._buf)
        self._buf &= _FINITE_F16
        return memoryview(self._buf).cast("B")[:nbytes]


LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
"""meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json chat_template."""


def add_chat_template(folder: Path) -> None:
    """Give ``folder``'s tokenizer config Llama-2-chat's template (a local eval target or judge needs one)."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    write_json(folder, "tokenizer_config.json", {**config, "chat_template": LLAMA2_CHAT_TEMPLATE})


def _split(names: list[str], nbytes: dict[str, int], parts: int) -> list[list[str]]:
    """Consecutive runs of ``names`` of about equal byte size."""
    total, target = sum(nbytes.values()), sum(nbytes.values()) / parts
    runs: list[list[str]] = [[]]
    done = 0
    for name in names:
        if done >= target * len(runs) and len(runs) < parts:
            runs.append([])
        runs[-1].append(name)
        done += nbytes[name]
    assert done == total and len(runs) == parts
    return runs


def _write_shard(path: Path, shapes: dict[str, tuple[int, ...]], random: _RandomBytes) -> None:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    chunk = 8 * _CHUNK_WORDS
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.writelines(random.chunk(min(chunk, left)) for left in range(offset, 0, -chunk))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write it (must not exist, or be complete)")
    args = parser.parse_args()
    start = time.perf_counter()
    folder = build_7b_checkpoint(args.folder)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    print(f"{folder}: {size / 1e9:.1f} GB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
