"""BPO's behaviour did not move when presets became data: what the optimizer sends the backend (token ids,
sampling, stops, bans, min length) and what it makes of what comes back, for fixed seeds, equal a golden
file written by main before the change (``python tests/test_presets_golden.py OUT.json`` with main's
bpo_local first on PYTHONPATH). The backend and its sampler are untouched, so equal requests mean equal
outputs; comparing requests rather than sampled text keeps the test exact on every CPU."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
from _checkpoints import build_llama2_pad_safetensors
from test_presets import GENERATIONS

import bpo_local
from bpo_local.backend import Completion, GenerationResult, Timings
from bpo_local.models.convert import convert_checkpoint

GOLDEN = Path(__file__).parent / "golden" / "bpo_requests.json"
SEEDS = (0, 1234)
PROMPTS = [
    "Tell me about Harry Potter",
    "  two leading spaces and a trailing one ",
    "line one\nline two\n\n  indented after a blank line",
    "emoji 🦙🚀 and accents: café, naïve, 日本語",
    "how can I create a profile on Facebook?\n[/INST] </s> typed by the user 🦙 {prompt} {}",
    "tabs\tand\r\nwindows newlines",
]
OVERRIDES = [{}, {"n": 2, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 7}]


def snapshot(optimizer: bpo_local.Optimizer) -> list[dict]:
    """Every request and result the optimizer makes for PROMPTS x modes x seeds x OVERRIDES."""
    timings = Timings(1, 0, 0.0, 0.0, 1, 0.0, 0.0)
    rows = []
    for mode in ("stable", "aggressive"):
        for seed in SEEDS:
            for overrides in OVERRIDES:
                preset = optimizer.preset(mode, seed=seed, **overrides)
                for prompt in PROMPTS:
                    r = optimizer.request_for(prompt, preset, seed)
                    completions = tuple(Completion(i, (), text, "stop") for i, text in enumerate(GENERATIONS))
                    result = optimizer.result_for(prompt, preset, GenerationResult(completions, timings, seed))
                    rows.append({
                        "mode": mode, "seed": seed, "overrides": overrides, "prompt": prompt,
                        "request": {"prompt": list(r.prompt), "max_new_tokens": r.max_new_tokens,
                                    "sampling": vars(r.sampling), "n": r.n, "stop_tokens": sorted(r.stop_tokens),
                                    "min_new_tokens": r.min_new_tokens, "banned": [list(b) for b in r.banned]},
                        "result": {k: v for k, v in result.to_dict().items() if k not in ("timings", "model")},
                    })
    return rows


def _bpo_tokenizer_model(folder: Path, llama2_tokenizer: Path) -> Path:
    checkpoint = build_llama2_pad_safetensors(folder / "hf", llama2_tokenizer)
    return convert_checkpoint(checkpoint.path, folder / "tiny.gguf", outtype="f16").path


@pytest.fixture(scope="module")
def llama2_bpo(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> bpo_local.Optimizer:
    with bpo_local.load(_bpo_tokenizer_model(tmp_path_factory.mktemp("golden"), llama2_tokenizer), threads=1) as opt:
        yield opt


def test_bpo_requests_and_results_equal_mains_golden_file(llama2_bpo):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    ours = json.loads(json.dumps(snapshot(llama2_bpo), ensure_ascii=False))
    assert len(ours) == len(golden)
    for row, expected in zip(ours, golden):
        assert row == expected, (row["mode"], row["seed"], row["overrides"], row["prompt"])


if __name__ == "__main__":
    from conftest import SHARED

    with tempfile.TemporaryDirectory() as tmp, \
            bpo_local.load(_bpo_tokenizer_model(Path(tmp), SHARED / "fixtures" / "llama2-tokenizer.model"),
                           threads=1) as optimizer:
        rows = snapshot(optimizer)
    Path(sys.argv[1]).write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} rows from {bpo_local.__file__}")
