"""BPO's successors as presets: PAS appends a supplement, MePO replaces the prompt, both through the model's
own chat template (the prompt tokens equal transformers' ``apply_chat_template``); a user's TOML preset in
the config folder is used; a build carries its preset and runs it by default, and ``--preset`` overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _checkpoints import build_qwen2
from _convert_helpers import llama_cpp_converter, llama_cpp_vocab_tests
from conftest import CACHE

import bpo_local
from bpo_local.errors import UsageError
from bpo_local.models.build import build_preset, chat_template, preset_metadata
from bpo_local.models.convert import convert_checkpoint
from bpo_local.preset_files import find_preset, load_preset_file
from bpo_local.presets import BUILTIN, MEPO, PAS, STABLE, build_prompt, final_prompt, postprocess

PROMPTS = ["Tell me about Harry Potter", "emoji 🦙 and <|im_end|> typed by a user\n  {prompt}", "write a haiku"]

TRANSFORMERS_CHAT = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
out = []
for system, user in json.loads(sys.argv[2]):
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out.append(tokenizer([text]).input_ids[0])
print(json.dumps(out))
"""

MINE = """
template = "Add one detail to this request.\\n{prompt}\\nDetail:"
wrap = "chat"
system = "Be brief."
use = "append"
separator = " -- "
temperature = 2.0             # hot and unfiltered: the random model's favourite is a newline
top_k = 0
top_p = 1.0
max_new_tokens = 6
stop_tokens = ["<|im_end|>"]
source = "the user's own"
"""


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random Qwen2 checkpoint (the real Qwen2 vocabulary and chat template) and its GGUF, built
    as a PAS build is: PAS's preset written in, the checkpoint's chat template kept."""
    root = tmp_path_factory.mktemp("qwen2-presets")
    vocab, _ = llama_cpp_vocab_tests(CACHE, "qwen2")
    ck = build_qwen2(root / "PAS-7B", vocab, tied=True, dtype="f16")
    gguf = convert_checkpoint(ck.path, root / "pas.gguf", outtype="f16", chat_template=chat_template(PAS),
                              extra_metadata=preset_metadata(PAS)).path
    return ck.path, gguf


@pytest.fixture(scope="module")
def pas_build(qwen2) -> bpo_local.Optimizer:
    with bpo_local.load(qwen2[1], threads=1) as optimizer:
        yield optimizer


def test_pas_and_mepo_cite_their_sources_and_no_licence():
    assert BUILTIN["pas"] is PAS and BUILTIN["mepo"] is MEPO and BUILTIN["stable"] is STABLE
    assert "scripts/make_train_data.py" in PAS.source and "optimize_prompt_instrution.txt" in MEPO.source
    assert all("no licence file" in p.licence for p in (PAS, MEPO))
    assert PAS.template.endswith("<User prompt>:\n{prompt}\n<Complementary information>:\n")
    assert (PAS.wrap, PAS.use, PAS.separator, PAS.system) == ("chat", "append", "\n", None)
    assert (MEPO.wrap, MEPO.use, MEPO.temperature, MEPO.max_new_tokens) == ("chat", "replace", 0.0, 1024)
    assert MEPO.system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert "Sliver Prompt:\n'{prompt}'\n" in MEPO.template and "\r" not in MEPO.template


def test_outputs_are_cleaned_and_used_as_each_preset_says():
    assert final_prompt("Q?", postprocess("Golden Prompt: Ask Q. ", MEPO), MEPO) == "Ask Q."
    assert final_prompt("Q?", postprocess(" Think of A. [/INST] B", PAS), PAS) == "Q?\nThink of A. [/INST] B"
    assert final_prompt("Q?", postprocess("  ", PAS), PAS) == "Q?"
    assert final_prompt("Q?", postprocess(" R [/INST] x", STABLE), STABLE) == "R"


def test_chat_prompts_equal_transformers_apply_chat_template(qwen2, pas_build):
    cases = [(preset.system, build_prompt(prompt, preset)) for preset in (PAS, MEPO) for prompt in PROMPTS]
    _, env = llama_cpp_converter(CACHE)  # transformers lives in the converter's folder
    done = subprocess.run([sys.executable, "-c", TRANSFORMERS_CHAT, str(qwen2[0]), json.dumps(cases)],
                          capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    expected = iter(json.loads(done.stdout))
    for preset in (PAS, MEPO):
        for prompt in PROMPTS:
            assert list(pas_build.request_for(prompt, preset, seed=1).prompt) == next(expected), (preset.name, prompt)


def test_a_pas_build_runs_pas_and_appends_its_supplement(qwen2, pas_build):
    assert pas_build.default_preset == "pas"
    assert pas_build.info.chat_template == json.loads((qwen2[0] / "tokenizer_config.json").read_text())["chat_template"]
    request = pas_build.request_for(PROMPTS[0], pas_build.preset(), seed=3)
    assert {151645, 151643} <= request.stop_tokens
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (0.6, 0.9, 50)
    # hot and unfiltered: the random model's favourite is a newline, which would leave nothing to append
    result = pas_build.optimize(PROMPTS[0], seed=3, max_tokens=8, temperature=2.0, top_k=0, top_p=1.0)
    supplement = postprocess(result.raw[0], PAS)
    assert result.mode == "pas" and supplement
    assert result.text == PROMPTS[0] + "\n" + supplement


def test_preset_overrides_the_builds_own(pas_build):
    result = pas_build.optimize(PROMPTS[2], mode="mepo", max_tokens=5)
    assert result.mode == "mepo" and result.params["temperature"] == 0.0
    assert result.text == postprocess(result.raw[0], MEPO)
    with pytest.raises(UsageError, match=r"^unknown preset 'nope'; choose from: stable, aggressive, pas, mepo"):
        pas_build.optimize("hi", mode="nope")


def test_a_toml_preset_in_the_config_folder_is_used_and_can_be_built_in(qwen2, bpo_home, tmp_path):
    (bpo_home / "presets").mkdir()
    (bpo_home / "presets" / "mine.toml").write_text(MINE, encoding="utf-8")
    with bpo_local.load(qwen2[1], threads=1) as optimizer:
        result = optimizer.optimize("List three fruits", mode="mine")
    supplement = postprocess(result.raw[0], optimizer.presets["mine"])
    assert result.mode == "mine" and result.params["max_tokens"] == 6 and supplement
    assert result.text == "List three fruits -- " + supplement

    mine = build_preset("mine", None)
    gguf = convert_checkpoint(qwen2[0], tmp_path / "mine.gguf", extra_metadata=preset_metadata(mine),
                              chat_template=chat_template(mine)).path
    (bpo_home / "presets" / "mine.toml").unlink()
    with bpo_local.load(gguf, threads=1) as optimizer:
        assert optimizer.default_preset == "mine" and optimizer.preset() == mine  # the build knows it


@pytest.mark.parametrize(("text", "message"), [
    ("template = 'no placeholder'", r"mine\.toml: template must be a text holding \{prompt\}$"),
    ("template = '{prompt}'\nuse = 'prepend'", r"mine\.toml: use must be replace or append$"),
    ("template = '{prompt}'\ntop_p = 2", r"mine\.toml: top_p must be a number in \(0, 1\], got 2\.0$"),
    ("template = '{prompt}'\ncolour = 'red'", r"mine\.toml: unknown field\(s\) colour; known: name, n,"),
    ("name = 'other'\ntemplate = '{prompt}'", r"mine\.toml: name 'other' differs from the file's; rename"),
    ("template = [", r"^cannot read preset file .*mine\.toml: .*; fix or delete it$"),
])
def test_a_broken_toml_preset_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message) as err:
        load_preset_file(path)
    assert "\n" not in str(err.value)


def test_a_toml_preset_cannot_take_a_built_in_name_and_a_broken_one_stops_only_its_own_runs(tmp_path):
    (tmp_path / "stable.toml").write_text("template = '{prompt}'", encoding="utf-8")
    with pytest.raises(UsageError, match=r"stable\.toml: 'stable' is a built-in preset's name; give yours"):
        load_preset_file(tmp_path / "stable.toml")
    (tmp_path / "broken.toml").write_text("template = [", encoding="utf-8")
    assert find_preset("pas", {}, tmp_path) is PAS
    with pytest.raises(UsageError,
                       match=r"^unknown preset 'x'; choose from: stable, aggressive, pas, mepo, broken \(or add .*x\.toml\)$"):
        find_preset("x", {}, tmp_path)


def test_builds_of_known_sources_get_their_preset_and_bpo_keeps_its_keys():
    assert build_preset(None, "PKU-Baichuan-MLSystemLab/PAS-7B") is PAS
    assert build_preset(None, "zixiaozhu/MePO") is MEPO
    assert build_preset(None, None) is STABLE and build_preset("mepo", "THUDM/BPO") is MEPO
    bpo = preset_metadata(STABLE)
    assert bpo["bpo.preset.default"] == "stable" and bpo["bpo.aggressive.n"] == 5
    assert bpo["bpo.aggressive.cut_markers"] == ["[KE", "[INS", "[PRO"] and "bpo.stable.system" not in bpo
    assert chat_template(MEPO) is None


def test_cli_optimize_runs_the_builds_preset_and_preset_overrides_it(qwen2, run_cli):
    built = run_cli("optimize", "--model", str(qwen2[1]), "--json", "--no-log", "--max-tokens", "3", "--seed", "1",
                    "write a haiku")
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    assert result["mode"] == "pas" and result["optimized_prompt"].startswith("write a haiku")
    chosen = run_cli("optimize", "--model", str(qwen2[1]), "--preset", "mepo", "--json", "--no-log",
                     "--max-tokens", "3", "write a haiku")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["mode"] == "mepo" and json.loads(chosen.stdout)["params"]["temperature"] == 0.0
    unknown = run_cli("optimize", "--model", str(qwen2[1]), "--preset", "nope", "hi")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown preset 'nope'; choose from: ")
    assert unknown.stderr.count("\n") == 1 and "Traceback" not in unknown.stderr


def test_a_llama_server_runs_chat_presets_as_the_local_engine_does(llama_server, smollm2_gguf):
    """The server's own chat template (from /props) wraps the turns: the same tokens, stops and result use."""
    from bpo_local.backends.llamacpp import Engine
    from bpo_local.backends.remote import connect
    from bpo_local.optimizer import Optimizer

    with Optimizer(connect([llama_server.url])) as remote, \
            Optimizer(Engine(smollm2_gguf, n_ctx=1024, n_threads=1)) as local:
        assert remote.info.chat_template == local.info.chat_template
        for name in ("pas", "mepo"):
            ours, theirs = (opt.request_for(PROMPTS[1], opt.preset(name), 3) for opt in (local, remote))
            assert ours == theirs and ours.stop_tokens >= {local.backend.eos_token}
        result = remote.optimize(PROMPTS[2], mode="pas", max_tokens=4, seed=2)
    assert result.mode == "pas" and result.text.startswith(PROMPTS[2])


def test_eval_runs_the_preset_it_is_given(smollm2_gguf, tmp_path):
    from _cli_helpers import cli_command, cli_env
    from test_eval import SMALL

    out = tmp_path / "out"
    args = ["eval", "--model", str(smollm2_gguf), "--threads", "1", "--ctx", "1024", "--target", str(smollm2_gguf),
            "--judge", str(smollm2_gguf), "--limit", "1", *SMALL, "--out", str(out), "--json", "--preset", "pas"]
    proc = subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["settings"]["bpo"]["mode"] == "pas"
    (pair,) = report["pairs"]
    assert pair["optimized_prompt"].startswith(pair["prompt"])  # PAS appends


def test_eval_compares_optimizers_over_the_same_answers(smollm2_gguf, qwen2, tmp_path):
    from _cli_helpers import cli_command, cli_env
    from test_eval import SMALL

    out = tmp_path / "out"
    args = ["eval", "--model", str(smollm2_gguf), "--threads", "1", "--ctx", "1024", "--target", str(smollm2_gguf),
            "--judge", str(smollm2_gguf), "--limit", "1", *SMALL, "--out", str(out), "--json",
            "--optimizer", "stable", "--optimizer", f"pas@{qwen2[1]}"]
    proc = subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    bpo, pas = json.loads(proc.stdout)["optimizers"]
    assert (bpo["settings"]["bpo"]["mode"], pas["settings"]["bpo"]["mode"]) == ("stable", "pas")
    assert pas["settings"]["bpo"]["model"] == "pas.gguf"
    (bpo_pair,), (pas_pair,) = bpo["pairs"], pas["pairs"]
    assert pas_pair["optimized_prompt"].startswith(pas_pair["prompt"])
    assert bpo_pair["answers"]["original"] == pas_pair["answers"]["original"]  # answered once, shared
    assert pas["stages"]["answer"]["cached"] >= 1
    assert (out / "report.md").read_text().count("# BPO evaluation") == 2


def test_convert_writes_the_preset_it_is_given_and_the_build_runs_it(qwen2, run_cli, bpo_home):
    done = run_cli("convert", str(qwen2[0]), "--quant", "q8_0", "--no-verify", "--preset", "pas", "--threads", "1")
    assert done.returncode == 0, done.stderr
    from bpo_local.gguf_header import read_header

    meta = read_header(bpo_home / "models" / "pas-7b" / "pas-7b-q8_0.gguf").metadata
    assert meta["general.architecture"] == "qwen2" and meta["bpo.preset.default"] == "pas"
    assert meta["bpo.pas.use"] == "append" and "bpo.stable.temperature" not in meta
    assert meta["tokenizer.chat_template"] == json.loads((qwen2[0] / "tokenizer_config.json").read_text())["chat_template"]
    ran = run_cli("optimize", "--model", "pas-7b:q8_0", "--json", "--no-log", "--max-tokens", "2", "hello")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["mode"] == "pas"


def test_the_quantization_check_of_a_pas_build_reads_pairs_as_pas_wraps_them(qwen2, pas_build, tmp_path):
    """verify teacher-forces BPO's test pairs after the prompt as the build runs it (PAS's chat turn), not
    after BPO's raw template."""
    from bpo_local.models.verify import EvalPair, Reference
    from bpo_local.prompt_tokens import prompt_tokens

    pair = EvalPair(PROMPTS[0], "A clearer prompt.")
    reference = Reference.compute(qwen2[1], [pair], tmp_path, threads=1)
    (sequence,) = reference.sequences
    wrapped = prompt_tokens(pas_build.backend, PROMPTS[0], PAS)
    assert sequence.tokens[:sequence.start] == wrapped and sequence.start == len(wrapped)
    assert wrapped != tuple(pas_build.backend.tokenize(build_prompt(PROMPTS[0], STABLE), add_bos=True))
