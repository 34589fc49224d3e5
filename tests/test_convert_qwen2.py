"""Qwen2 checkpoints (PAS-7B, MePO) convert as faithfully as Llama ones: tiny random Qwen2s with the real
Qwen2 vocabulary match llama.cpp's own converter (tensors, keys), transformers (logits) and ``tokenizers``
(token ids on BPO's test prompts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from _checkpoints import Checkpoint, build_qwen2, read_gguf_kv
from _convert_helpers import LlamaCpp, llama_cpp_converter, llama_cpp_vocab_tests
from conftest import CACHE
from test_convert import USER_PROMPTS

from bpo_local.models.convert import convert_checkpoint
from bpo_local.presets import build_prompt

KINDS = ("untied_bf16", "tied_f16")
"""PAS-7B's layout (bf16 safetensors in shards, untied lm_head) and a small Qwen2's (f16, tied)."""

TRANSFORMERS_LOGITS = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="eager")
with torch.no_grad():
    logits = model(torch.tensor([json.loads(sys.argv[2])])).logits[0]
np.save(sys.argv[3], logits.double().numpy())
"""


@pytest.fixture(scope="module")
def qwen2_vocab() -> tuple[Path, list[tuple[str, list[int]]]]:
    return llama_cpp_vocab_tests(CACHE, "qwen2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, qwen2_vocab) -> dict[str, Checkpoint]:
    root = tmp_path_factory.mktemp("qwen2")
    return {"untied_bf16": build_qwen2(root / "untied_bf16", qwen2_vocab[0], tied=False, dtype="bf16", shards=2),
            "tied_f16": build_qwen2(root / "tied_f16", qwen2_vocab[0], tied=True, dtype="f16")}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory, checkpoints) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("qwen2-ggufs")
    return {(kind, outtype): convert_checkpoint(ck.path, out / f"{kind}-{outtype}.gguf", outtype=outtype).path
            for kind, ck in checkpoints.items() for outtype in ("f32", "f16")}


def _llama_cpp_converts(src: Path, out: Path) -> None:
    script, env = llama_cpp_converter(CACHE)
    done = subprocess.run([sys.executable, str(script), str(src), "--outtype", "f16", "--outfile", str(out)],
                          capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("kind", KINDS)
def test_f16_tensors_and_keys_equal_llama_cpps_converter(kind, checkpoints, ggufs, tmp_path):
    theirs_path = tmp_path / "theirs.gguf"
    _llama_cpp_converts(checkpoints[kind].path, theirs_path)
    ours = {t.name: t for t in gguf.GGUFReader(ggufs[kind, "f16"]).tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(theirs_path).tensors}
    assert sorted(ours) == sorted(theirs)
    assert "blk.1.attn_k.bias" in ours and ("output.weight" in ours) == (kind == "untied_bf16")
    for name, tensor in theirs.items():
        assert ours[name].tensor_type == tensor.tensor_type, name
        assert list(ours[name].shape) == list(tensor.shape), name
        assert ours[name].data.tobytes() == tensor.data.tobytes(), name
    ours_kv, theirs_kv = read_gguf_kv(ggufs[kind, "f16"]), read_gguf_kv(theirs_path)
    model_keys = [k for k in theirs_kv if k.startswith(("qwen2.", "tokenizer."))]
    assert [k for k in ours_kv if k.startswith(("qwen2.", "tokenizer."))] == model_keys
    for key in model_keys:
        assert ours_kv[key] == theirs_kv[key], key
    assert ours_kv["general.architecture"] == "qwen2" and ours_kv["tokenizer.ggml.pre"] == "qwen2"
    config = json.loads((checkpoints[kind].path / "tokenizer_config.json").read_text())
    assert ours_kv["tokenizer.chat_template"] == config["chat_template"]


@pytest.mark.parametrize("kind", KINDS)
def test_f32_logits_match_transformers(kind, checkpoints, ggufs, tmp_path):
    with LlamaCpp(ggufs[kind, "f32"]) as model:
        tokens = model.tokenize("The quick brown fox jumps over the lazy dog, then 你好 world again.")
        ours = model.logits(tokens)
    _, env = llama_cpp_converter(CACHE)  # transformers and torch live in the converter's folder
    done = subprocess.run([sys.executable, "-c", TRANSFORMERS_LOGITS, str(checkpoints[kind].path), json.dumps(tokens),
                           str(tmp_path / "ref.npy")], capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    reference = np.load(tmp_path / "ref.npy")
    assert ours.shape == reference.shape == (len(tokens), checkpoints[kind].config["vocab_size"])
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


def test_token_ids_equal_tokenizers_on_bpo_prompts_and_llama_cpps_cases(checkpoints, ggufs, qwen2_vocab,
                                                                         bpo_test_data):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(checkpoints["tied_f16"].path / "tokenizer.json"))
    dataset = [row["prompt"] for row in json.loads(Path(bpo_test_data).read_text())[:40]]
    texts = USER_PROMPTS + dataset + [build_prompt(p) for p in USER_PROMPTS]
    with LlamaCpp(ggufs["tied_f16", "f16"], vocab_only=True) as vocab:
        assert vocab.meta("tokenizer.ggml.add_bos_token") == "false"
        for text in texts:
            assert vocab.tokenize(text, add_special=True) == hf.encode(text).ids, text
        for text, expected in qwen2_vocab[1]:
            assert vocab.tokenize(text, add_special=False) == expected, text
        chat = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        assert vocab.tokenize(chat, add_special=False, parse_special=True) == hf.encode(chat).ids
        assert vocab.meta("tokenizer.ggml.eos_token_id") == "151645"
