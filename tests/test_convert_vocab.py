"""Tokenizer metadata as llama.cpp's own converter writes it: byte-level BPE checkpoints get the
pre-tokenizer and add_bos/add_eos it would write, so llama.cpp tokenizes like the checkpoint's
tokenizer.json (``tokenizers``); SentencePiece ones keep its exact keys."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _checkpoints import build_llama2_pad_safetensors, build_smollm2, read_gguf_kv, write_json
from _convert_helpers import LlamaCpp, llama_cpp_converter, llama_cpp_pre_tokenizer_table
from conftest import CACHE

from bpo_local.backends.llamacpp import Engine
from bpo_local.errors import ConversionError
from bpo_local.models.convert import convert_checkpoint
from bpo_local.models.convert.pre_tokenizers import CHECK_TEXT, PRE_TOKENIZERS

NUMBER_TEXTS = [
    "3 33 333 3333 33333 333333",
    "1234567890",
    "pi is 3.14159 and e is 2.71828",
    "In 2024, 12,345 people paid $1,000.50 each (10% off).",
    "x=10**6; y = 0.5e-3; z=-42",
    "phone: +1 (555) 010-9999, ext.12",
    "version 1.2.3-rc4 built on 2025-01-31T23:59:59Z",
    "  7\n\n 8\t9 ",
    "٣٤٥ and ４５６ and ①②",
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    return build_smollm2(tmp_path_factory.mktemp("smollm2") / "ck", smollm2_gguf).path


@pytest.fixture(scope="module")
def smollm2_ours(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Path:
    return convert_checkpoint(smollm2, tmp_path_factory.mktemp("ours") / "m.gguf").path


def _theirs(src: Path, out: Path) -> subprocess.CompletedProcess:
    """llama.cpp's convert_hf_to_gguf.py --vocab-only on ``src`` (with torch from the converter's own folder)."""
    script, env = llama_cpp_converter(CACHE)
    return subprocess.run([sys.executable, str(script), str(src), "--vocab-only", "--outfile", str(out)],
                          capture_output=True, text=True, env={**os.environ, **env})


def _tokenizer_kv(path: Path) -> list[tuple[str, object]]:
    return [(k, v) for k, v in read_gguf_kv(path).items() if k.startswith("tokenizer.")]


def test_pre_tokenizer_table_is_the_installed_llama_cpps():
    check_text, table = llama_cpp_pre_tokenizer_table(CACHE)
    assert check_text == CHECK_TEXT
    missing = {h: n for h, n in table.items() if PRE_TOKENIZERS.get(h) != n}
    assert not missing, "update bpo_local/models/convert/pre_tokenizers.py:\n" + "\n".join(
        f'    "{h}": "{n}",' for h, n in missing.items())
    assert set(PRE_TOKENIZERS) == set(table)


def test_smollm2_tokenizer_metadata_equals_llama_cpp_converters(smollm2, smollm2_ours, tmp_path):
    theirs = tmp_path / "theirs.gguf"
    done = _theirs(smollm2, theirs)
    assert done.returncode == 0, done.stderr[-3000:]
    ours_kv, theirs_kv = _tokenizer_kv(smollm2_ours), _tokenizer_kv(theirs)
    assert dict(ours_kv)["tokenizer.ggml.pre"] == "smollm"
    assert dict(ours_kv)["tokenizer.ggml.add_bos_token"] is False
    assert dict(ours_kv)["tokenizer.ggml.add_eos_token"] is False
    assert [k for k, _ in ours_kv] == [k for k, _ in theirs_kv]  # same keys, written in the same order
    for (key, ours), (_, expected) in zip(ours_kv, theirs_kv):
        assert ours == expected, key


def test_llama2_tokenizer_metadata_equals_llama_cpp_converters(llama2_tokenizer, tmp_path):
    src = build_llama2_pad_safetensors(tmp_path / "llama2", llama2_tokenizer).path
    ours = convert_checkpoint(src, tmp_path / "ours.gguf").path
    done = _theirs(src, tmp_path / "theirs.gguf")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _tokenizer_kv(ours) == _tokenizer_kv(tmp_path / "theirs.gguf")


def test_llama_cpp_tokenizes_numbers_as_the_tokenizer_json_does(smollm2, smollm2_ours, smollm2_gguf):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(smollm2 / "tokenizer.json"))
    with Engine(smollm2_ours, n_ctx=256, n_threads=1) as ours, Engine(smollm2_gguf, n_ctx=256, n_threads=1) as real, \
            LlamaCpp(smollm2_ours, vocab_only=True) as vocab:
        for text in NUMBER_TEXTS + [CHECK_TEXT]:
            expected = hf.encode(text, add_special_tokens=False).ids
            assert ours.tokenize(text, add_bos=False) == expected, text
            assert real.tokenize(text, add_bos=False) == expected, text  # the published GGUF agrees
            # with its specials, as llama.cpp adds them from the GGUF's add_bos/add_eos (none here)
            assert vocab.tokenize(text, add_special=True) == hf.encode(text).ids, text
    assert hf.encode("12345", add_special_tokens=False).ids == [hf.token_to_id(d) for d in "12345"]


def _variant(smollm2: Path, tmp_path: Path, *, pre_tokenizer: dict | None = None, **config: object) -> Path:
    src = tmp_path / "variant"
    shutil.copytree(smollm2, src)
    if pre_tokenizer is not None:
        tokenizer = json.loads((src / "tokenizer.json").read_text())
        write_json(src, "tokenizer.json", {**tokenizer, "pre_tokenizer": pre_tokenizer})
    write_json(src, "tokenizer_config.json", {**json.loads((src / "tokenizer_config.json").read_text()), **config})
    return src


SPACE_PREFIXED = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}


@pytest.mark.parametrize("change", [
    pytest.param({"pre_tokenizer": SPACE_PREFIXED}, id="space-prefixed"),
    # (with add_prefix_space set, transformers would rebuild a LlamaTokenizer from a tokenizer.model)
    pytest.param({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_prefix_space": None},
                 id="llama-tokenizer-adds-bos"),
])
def test_unknown_pre_tokenizer_is_refused_naming_llama_cpps_checksum(smollm2, tmp_path, change):
    src = _variant(smollm2, tmp_path, **change)
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(src, tmp_path / "m.gguf")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown tokenizer.json pre-tokenizer")
    assert "a newer llama-cpp-python may know this model" in message
    assert not (tmp_path / "m.gguf").exists()
    done = _theirs(src, tmp_path / "theirs.gguf")
    assert done.returncode != 0 and "BPE pre-tokenizer was not recognized" in done.stderr, done.stderr[-3000:]
    (theirs,) = re.findall(r"chkhsh:\s+([0-9a-f]{64})", done.stderr)
    assert f"checksum {theirs} " in message


def test_add_eos_in_tokenizer_config_yields_to_the_byte_level_post_processor(smollm2, tmp_path):
    """gguf-py as bundled with llama.cpp: the post-processor decides, tokenizer_config.json only fills in."""
    src = _variant(smollm2, tmp_path, add_eos_token=True)
    ours = convert_checkpoint(src, tmp_path / "ours.gguf").path
    done = _theirs(src, tmp_path / "theirs.gguf")
    assert done.returncode == 0, done.stderr[-3000:]
    assert dict(_tokenizer_kv(ours))["tokenizer.ggml.add_eos_token"] is False
    assert _tokenizer_kv(ours) == _tokenizer_kv(tmp_path / "theirs.gguf")
