"""HF checkpoint -> GGUF: real tiny checkpoints converted, loaded in llama.cpp, checked against numpy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from _checkpoints import (
    Checkpoint,
    build_bpe_tied,
    build_from_vocab_gguf,
    build_llama2_bin,
    build_llama2_pad_safetensors,
    save_safetensors,
)
from _convert_helpers import FakeHub, LlamaCpp, fill_disk_at, llama_cpp_vocab_tests, mounted_tmpfs, reference_logits
from conftest import CACHE

from bpo_local.cli.advice import describe
from bpo_local.errors import ConversionError
from bpo_local.models.convert import convert_checkpoint
from bpo_local.presets import CHAT_TEMPLATE_JINJA, build_prompt

KINDS = ("llama2_bin", "pad_safetensors", "bpe_tied")

USER_PROMPTS = [
    "Tell me about Harry Potter",
    "  two leading spaces and a trailing one ",
    "line one\nline two\n\n  indented after a blank line",
    "emoji 🦙🚀 and accents: café, naïve, 日本語",
    "a user typing [/INST] and <s> and </s> and [PAD] literally",
    "tabs\tand\r\nwindows newlines",
]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> dict[str, Checkpoint]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {"llama2_bin": build_llama2_bin(root / "llama2_bin", llama2_tokenizer),
            "pad_safetensors": build_llama2_pad_safetensors(root / "pad_safetensors", llama2_tokenizer),
            "bpe_tied": build_bpe_tied(root / "bpe_tied")}


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Checkpoint]) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("ggufs")
    return {(kind, outtype): convert_checkpoint(ck.path, out / f"{kind}-{outtype}.gguf", outtype=outtype).path
            for kind, ck in checkpoints.items() for outtype in ("f32", "f16")}


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("kind", KINDS)
def test_converted_model_loads_and_generates(kind, outtype, checkpoints, ggufs):
    ck = checkpoints[kind]
    path = ggufs[kind, outtype]
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == outtype.upper()
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert ("output.weight" in types) == (not ck.config["tie_word_embeddings"])
    assert len(types) == 2 + 9 * 2 + (0 if ck.config["tie_word_embeddings"] else 1)
    with LlamaCpp(path) as model:
        assert model.meta("general.architecture") == "llama"
        assert model.meta("general.file_type") == str({"f32": 0, "f16": 1}[outtype])
        assert model.n_vocab() == ck.config["vocab_size"]
        prompt = model.tokenize("Hello world, the hello")
        generated = model.greedy(prompt, 4)
    assert len(generated) == 4 and all(0 <= t < ck.config["vocab_size"] for t in generated)


@pytest.mark.parametrize("kind", KINDS)
def test_f32_logits_match_numpy_reference_forward(kind, checkpoints, ggufs):
    ck = checkpoints[kind]
    with LlamaCpp(ggufs[kind, "f32"]) as model:
        tokens = model.tokenize("The quick brown fox jumps over the lazy dog, then hello world again.")
        ours = model.logits(tokens)
    reference = reference_logits(ck.weights, ck.config, tokens)
    assert ours.shape == reference.shape
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ours, reference, atol=1e-5 * scale, rtol=0)
    top2 = np.sort(reference, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-5 * scale  # a near-tie within the tolerance may go either way
    assert clear.sum() >= len(tokens) - 1
    assert (ours.argmax(-1) == reference.argmax(-1))[clear].all()


@pytest.mark.parametrize("kind", ["llama2_bin", "pad_safetensors"])
def test_bpo_prompt_token_ids_equal_sentencepiece(kind, checkpoints, ggufs, llama2_tokenizer, bpo_test_data):
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor(model_file=str(llama2_tokenizer))
    dataset = [row["prompt"] for row in json.loads(Path(bpo_test_data).read_text())[:40]]
    with LlamaCpp(ggufs[kind, "f16"], vocab_only=True) as vocab:
        for user_prompt in USER_PROMPTS + dataset:
            text = build_prompt(user_prompt)
            assert vocab.tokenize(text) == [1] + sp.encode(text), user_prompt


def test_llama2_vocab_tokenizes_llama_cpp_test_texts_like_hugging_face(checkpoints, ggufs):
    """llama.cpp's tokenizer test texts for the Llama-2 SentencePiece vocabulary, with HF's ids."""
    _, cases = llama_cpp_vocab_tests(CACHE, "llama-spm")
    with LlamaCpp(ggufs["pad_safetensors", "f16"], vocab_only=True) as vocab:
        for text, expected in cases:
            assert vocab.tokenize(text, add_special=False) == expected, text


def test_vocab_and_special_tokens_of_a_llama2_checkpoint_with_added_pad(ggufs):
    with LlamaCpp(ggufs["pad_safetensors", "f16"], vocab_only=True) as vocab:
        assert vocab.n_vocab() == 32001
        assert vocab.token_text(32000) == b"[PAD]"
        assert vocab.token_text(29871) == "▁".encode()
        assert [vocab.meta(f"tokenizer.ggml.{k}") for k in
                ("bos_token_id", "eos_token_id", "padding_token_id")] == ["1", "2", "32000"]
        assert vocab.meta("tokenizer.ggml.add_bos_token") == "true"
        assert vocab.meta("tokenizer.ggml.add_eos_token") == "false"
        assert vocab.tokenize("[PAD]", add_special=False, parse_special=True) == [32000]


def test_byte_level_bpe_vocab_is_padded_and_its_pre_tokenizer_named(ggufs):
    with LlamaCpp(ggufs["bpe_tied", "f16"], vocab_only=True) as vocab:
        assert vocab.meta("tokenizer.ggml.model") == "gpt2"
        assert vocab.meta("tokenizer.ggml.pre") == "llama-bpe"
        assert vocab.n_vocab() == 267
        assert vocab.token_text(266) == b"[PAD266]"
        assert vocab.meta("tokenizer.ggml.bos_token_id") == "262"
        assert vocab.meta("tokenizer.ggml.eos_token_id") == "263"
        # merges applied: " the" is one token (258), " hello" is Ġ + he + ll + o
        assert vocab.tokenize(" the hello", add_special=False) == [258, 32, 257, 259, ord("o")]


def test_real_llama3_tokenizer_json_tokenizes_like_hugging_face(tmp_path):
    """Llama-3's vocabulary (from llama.cpp's test vocab) as a tokenizer.json, converted: llama.cpp must
    reproduce the token ids HF's tokenizer gave for llama.cpp's own test texts."""
    vocab_gguf, cases = llama_cpp_vocab_tests(CACHE, "llama-bpe")
    ck = build_from_vocab_gguf(tmp_path / "llama3", vocab_gguf)
    with LlamaCpp(convert_checkpoint(ck.path, tmp_path / "m.gguf").path, vocab_only=True) as vocab:
        assert vocab.meta("tokenizer.ggml.pre") == "llama-bpe" and vocab.n_vocab() == 128256
        assert vocab.meta("tokenizer.ggml.bos_token_id") == "128000"
        assert vocab.tokenize("<|eot_id|>", add_special=False, parse_special=True) == [128009]
        for text, expected in cases:
            assert vocab.tokenize(text, add_special=False) == expected, text


def test_bf16_outtype_keeps_bf16_weights_exactly(checkpoints, tmp_path):
    ck = checkpoints["pad_safetensors"]
    path = convert_checkpoint(ck.path, tmp_path / "m.gguf", outtype="bf16").path
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert tensors["token_embd.weight"].tensor_type.name == "BF16"
    embd = gguf.quants.dequantize(tensors["token_embd.weight"].data, gguf.GGMLQuantizationType.BF16)
    np.testing.assert_array_equal(embd.reshape(ck.weights["model.embed_tokens.weight"].shape),
                                  ck.weights["model.embed_tokens.weight"])
    with LlamaCpp(path) as model:  # BF16 matmuls round activations to bf16 too: a looser bound
        tokens = model.tokenize("hello world")
        reference = reference_logits(ck.weights, ck.config, tokens)
        np.testing.assert_allclose(model.logits(tokens), reference, atol=1e-2 * np.abs(reference).max(), rtol=0)


def test_name_chat_template_and_extra_metadata_are_written(checkpoints, tmp_path):
    ck = checkpoints["pad_safetensors"]
    seen = []
    report = convert_checkpoint(
        ck.path, tmp_path / "m.gguf", name="BPO tiny", chat_template=CHAT_TEMPLATE_JINJA,
        extra_metadata={"general.source.repo_url": "https://huggingface.co/THUDM/BPO", "bpo.n": 5,
                        "bpo.temperature": 0.5, "bpo.stop_on_newline": True},
        on_tensor=lambda name, index, total: seen.append((name, index, total)))
    assert report.n_tensors == 21 and report.tokenizer == "llama" and report.vocab_size == 32001
    assert [i for _, i, _ in seen] == list(range(21)) and {t for _, _, t in seen} == {21}
    with LlamaCpp(report.path, vocab_only=True) as vocab:
        assert vocab.meta("general.name") == "BPO tiny"
        assert vocab.meta("tokenizer.chat_template") == CHAT_TEMPLATE_JINJA
        assert vocab.meta("general.source.repo_url") == "https://huggingface.co/THUDM/BPO"
        assert vocab.meta("bpo.n") == "5"
        assert float(vocab.meta("bpo.temperature")) == 0.5
        assert vocab.meta("bpo.stop_on_newline") == "true"


def test_mistral_and_current_config_spelling_convert_to_llama(checkpoints, tmp_path):
    src = tmp_path / "mistral"
    shutil.copytree(checkpoints["pad_safetensors"].path, src)
    config = json.loads((src / "config.json").read_text())
    config |= {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 4096,
               "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}}
    (src / "config.json").write_text(json.dumps(config))
    with LlamaCpp(convert_checkpoint(src, tmp_path / "m.gguf").path, vocab_only=True) as vocab:
        assert vocab.meta("general.architecture") == "llama"
        assert float(vocab.meta("llama.rope.freq_base")) == 500000.0
        assert vocab.meta("llama.rope.scaling.type") == "linear"
        assert float(vocab.meta("llama.rope.scaling.factor")) == 2.0
        assert vocab.meta("llama.attention.head_count_kv") == "2"


def _with_config(ck: Checkpoint, tmp_path: Path, **changes: object) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ck.path, src)
    config = json.loads((src / "config.json").read_text()) | changes
    (src / "config.json").write_text(json.dumps(config))
    return src


def test_llama3_rope_scaling_becomes_the_rope_freqs_tensor(checkpoints, tmp_path):
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64, "rope_theta": 500000.0}
    src = _with_config(checkpoints["bpe_tied"], tmp_path, rope_parameters=rope)
    path = convert_checkpoint(src, tmp_path / "m.gguf").path
    freqs = {t.name: t for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"]
    assert freqs.tensor_type.name == "F32" and list(freqs.shape) == [8]
    factors = np.asarray(freqs.data)
    assert factors[0] == 1.0 and factors[-1] == 8.0 and np.all(np.diff(factors) >= 0)
    with LlamaCpp(path) as model:
        assert len(model.greedy(model.tokenize("hello"), 2)) == 2


def test_yarn_rope_scaling_metadata(checkpoints, tmp_path):
    rope = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32.0}
    src = _with_config(checkpoints["bpe_tied"], tmp_path, rope_scaling=rope)
    with LlamaCpp(convert_checkpoint(src, tmp_path / "m.gguf").path, vocab_only=True) as vocab:
        assert vocab.meta("llama.rope.scaling.type") == "yarn"
        assert float(vocab.meta("llama.rope.scaling.factor")) == 4.0
        assert vocab.meta("llama.rope.scaling.original_context_length") == "64"
        assert float(vocab.meta("llama.rope.scaling.yarn_beta_fast")) == 32.0


def test_standalone_script_converts_and_reports_errors_on_one_line(checkpoints, tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "convert_hf_to_gguf.py"
    ok = subprocess.run([sys.executable, str(script), str(checkpoints["bpe_tied"].path), "--outfile",
                         str(tmp_path / "m.gguf"), "--outtype", "f32"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stderr.startswith("wrote ") and (tmp_path / "m.gguf").is_file()
    bad = subprocess.run([sys.executable, str(script), str(tmp_path), "--outfile", str(tmp_path / "x.gguf")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr == f"error: no config.json in {tmp_path}: point at a Hugging Face " \
                                                 "checkpoint folder\n"


# ---- bad inputs: one clear line each, and never a partial output file --------------------------------

def _broken_copy(ck: Checkpoint, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ck.path, src)
    return src


def _fails(src: Path, tmp_path: Path, match: str, **kwargs) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError, match=match) as err:
        convert_checkpoint(src, out_dir / "m.gguf", **kwargs)
    assert "\n" not in str(err.value)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_missing_config_json(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    (src / "config.json").unlink()
    _fails(src, tmp_path, r"^no config\.json in .*src: point at")


def test_unsupported_architecture(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    config = json.loads((src / "config.json").read_text()) | {"architectures": ["GPT2LMHeadModel"]}
    (src / "config.json").write_text(json.dumps(config))
    _fails(src, tmp_path,
           r"^unsupported architecture GPT2LMHeadModel; supported: LlamaForCausalLM, MistralForCausalLM, "
           r"Qwen2ForCausalLM$")


def test_vocab_size_not_matching_the_embedding(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    config = json.loads((src / "config.json").read_text()) | {"vocab_size": 32002}
    (src / "config.json").write_text(json.dumps(config))
    _fails(src, tmp_path, r"^config\.json vocab_size is 32002 but the embedding has 32001 rows;")


def test_missing_tokenizer(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    (src / "tokenizer.model").unlink()
    _fails(src, tmp_path, r"^no tokenizer in .*: expected tokenizer\.model")


def test_missing_shard_is_named(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    (src / "model-00002-of-00002.safetensors").unlink()
    _fails(src, tmp_path, r"^missing weight shard model-00002-of-00002\.safetensors in ")


def test_truncated_safetensors_is_named(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    shard = src / "model-00001-of-00002.safetensors"
    os.truncate(shard, shard.stat().st_size - 1000)
    _fails(src, tmp_path, r"^truncated or corrupt weights file model-00001-of-00002\.safetensors")


def test_garbage_safetensors_header_is_named(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["pad_safetensors"], tmp_path)
    (src / "model-00002-of-00002.safetensors").write_bytes(b"<html>rate limited</html>")
    _fails(src, tmp_path, r"^truncated or corrupt weights file model-00002-of-00002\.safetensors")


def test_truncated_torch_bin_is_named(checkpoints, tmp_path):
    src = _broken_copy(checkpoints["llama2_bin"], tmp_path)
    shard = src / "pytorch_model-00002-of-00002.bin"
    os.truncate(shard, shard.stat().st_size // 2)
    _fails(src, tmp_path, r"^truncated or corrupt weights file pytorch_model-00002-of-00002\.bin")


def test_interrupt_leaves_no_partial_file_and_keeps_the_old_one(checkpoints, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"previous build")

    def interrupt(name: str, index: int, total: int) -> None:
        if index == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(checkpoints["pad_safetensors"].path, out, on_tensor=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"] and out.read_bytes() == b"previous build"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs (needs root and mount); too small for the tiny model's 17 MB F32 build."""
    yield from mounted_tmpfs(tmp_path / "disk", "6m")


def test_not_enough_disk_space_before_writing(checkpoints, small_disk):
    with pytest.raises(ConversionError, match=r"^not enough disk space in .*disk: need ~\d+ MB$") as info:
        convert_checkpoint(checkpoints["pad_safetensors"].path, small_disk / "m.gguf", outtype="f32")
    assert describe(info.value) == f"{info.value}; free some or use --outtype f16"
    assert list(small_disk.iterdir()) == []


def test_disk_filling_up_while_writing(checkpoints, small_disk):
    with pytest.raises(ConversionError, match=r"^not enough disk space in .*disk: need ~"):
        convert_checkpoint(checkpoints["bpe_tied"].path, small_disk / "m.gguf", outtype="f32",
                           on_tensor=fill_disk_at(small_disk))
    assert [p.name for p in small_disk.iterdir()] == ["other-program.bin"]


# ---- the Hub path, against a real HTTP server on 127.0.0.1 --------------------------------------------

FETCH = ("import sys\nfrom bpo_local.models.convert import fetch_source\nfrom bpo_local.errors import BpoLocalError\n"
         "try:\n    c = fetch_source(sys.argv[1], progress=lambda label, done, total: "
         "print('progress', label, done, total, file=sys.stderr))\nexcept BpoLocalError as e:\n"
         "    print('error:', e); sys.exit(1)\nprint(c.path); print(c.repo_id); print(c.revision)")


def _fetch(repo: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_* at import: each fetch runs in its own process, as a user's would."""
    return subprocess.run([sys.executable, "-c", FETCH, repo], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def hub_repo(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Checkpoint]) -> Path:
    """The safetensors checkpoint as a Hub repo, plus files conversion must NOT download."""
    repo = tmp_path_factory.mktemp("hub") / "repo"
    shutil.copytree(checkpoints["pad_safetensors"].path, repo)
    (repo / "README.md").write_text("# tiny\n")
    (repo / "pytorch_model.bin").write_bytes(b"\0" * 4096)  # the other weight format: skipped
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(b"\0" * 4096)
    return repo


def test_fetch_from_hub_downloads_only_what_conversion_needs_then_works_offline(hub_repo, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub({"tiny/llama": hub_repo}) as hub:
        env["HF_ENDPOINT"] = hub.url
        fetched = _fetch("tiny/llama", env)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert hub.downloaded() == {
            "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
            "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json",
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
        assert "progress download" in fetched.stderr
        n_requests = len(hub.requests)
        path, repo_id, revision = fetched.stdout.split()
        assert repo_id == "tiny/llama" and len(revision) == 40 and str(tmp_path / "hf") in path

        offline = _fetch("tiny/llama", env | {"HF_HUB_OFFLINE": "1"})
        assert offline.returncode == 0, offline.stdout + offline.stderr
        assert offline.stdout.split() == [path, repo_id, revision]
        assert len(hub.requests) == n_requests  # offline means no request at all

    report = convert_checkpoint(Path(path), tmp_path / "m.gguf")
    assert report.n_tensors == 21


def test_a_dropped_download_resumes_and_a_rerun_fetches_nothing_twice(checkpoints, tmp_path):
    """The connection drops 12 MB into a 17 MB shard: huggingface_hub asks for the rest with a Range
    (from its last 10 MiB chunk written); a second run finds every file in the cache."""
    ck = checkpoints["pad_safetensors"]
    repo = tmp_path / "repo"
    shutil.copytree(ck.path, repo, ignore=shutil.ignore_patterns("model*.safetensors*"))
    save_safetensors(repo / "model.safetensors", ck.weights, "f32")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub({"tiny/llama": repo}, drop_after={"model.safetensors": 12_000_000}) as hub:
        env["HF_ENDPOINT"] = hub.url
        first = _fetch("tiny/llama", env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert hub.ranges == [f"bytes={10 * 2**20}-"]
        gets = sum(m == "GET" and "/resolve/" in p for m, p in hub.requests)
        assert _fetch("tiny/llama", env).stdout == first.stdout
        assert sum(m == "GET" and "/resolve/" in p for m, p in hub.requests) == gets
    path = Path(first.stdout.split()[0])
    assert (path / "model.safetensors").read_bytes() == (repo / "model.safetensors").read_bytes()


def test_hub_errors_are_one_line_with_the_fix(hub_repo, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub({"tiny/llama": hub_repo}) as hub:
        missing = _fetch("tiny/nope", env | {"HF_ENDPOINT": hub.url})
    assert missing.returncode == 1
    assert missing.stdout == "error: no model tiny/nope on the Hub (if it is private, set HF_TOKEN)\n"

    offline = _fetch("tiny/llama", env | {"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1
    # the library states the fact; the CLI adds the offline recipe (test_cli_convert checks that line)
    assert offline.stdout == "error: HF_HUB_OFFLINE is set and tiny/llama is not in the Hugging Face cache\n"

    unreachable = _fetch("tiny/llama", env | {"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert unreachable.returncode == 1
    assert unreachable.stdout.startswith("error: cannot reach the Hub")


def test_local_folder_is_used_as_is(checkpoints):
    from bpo_local.models.convert import fetch_source

    ck = checkpoints["pad_safetensors"]
    assert fetch_source(str(ck.path)).path == ck.path.resolve()
