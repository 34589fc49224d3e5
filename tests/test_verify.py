"""Verify: teacher-forced KL of quantized builds against F16 on BPO pairs, with real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bpo_local.errors import UsageError
from bpo_local.models.quantize import quantize
from bpo_local.models.verify import EvalPair, Reference, VerifyResult, compare, load_pairs
from bpo_local.presets import build_prompt


@pytest.fixture(scope="module")
def quants(smollm2_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("quants")
    return {q: quantize(smollm2_f16, out / f"{q}.gguf", q, threads=2).path for q in ("q8_0", "q4_0")}


@pytest.fixture(scope="module")
def reference(smollm2_f16: Path, eval_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference.compute(smollm2_f16, load_pairs(eval_pairs), tmp_path_factory.mktemp("ref"), threads=2)


def test_a_build_against_itself_has_zero_drift(smollm2_f16: Path, reference: Reference) -> None:
    result = compare(smollm2_f16, reference, threads=2)
    assert result.kl_mean == 0.0 and result.kl_max == 0.0
    assert result.same_top == 1.0 and result.ppl_ratio == 1.0
    assert result.sequences == 4 and result.tokens > 40


def test_q8_0_drifts_less_than_q4_0(quants: dict[str, Path], reference: Reference) -> None:
    q8, q4 = (compare(quants[q], reference, threads=2) for q in ("q8_0", "q4_0"))
    assert 0 < q8.kl_mean < q4.kl_mean < 1.0
    assert q8.kl_mean <= q8.kl_p99 <= q8.kl_max
    assert q8.same_top >= q4.same_top and q8.same_top > 0.9
    assert abs(q8.ppl_ratio - 1) < abs(q4.ppl_ratio - 1) + 0.01 and abs(q8.ppl_ratio - 1) < 0.05


def test_kl_matches_a_direct_computation(smollm2_f16: Path, quants: dict[str, Path], tmp_path: Path) -> None:
    """One pair by hand: softmax both, sum p * log(p / q) over the optimized-prompt positions."""
    from bpo_local.backends.llamacpp import Engine

    pair = EvalPair("Tell me a joke", "Tell me a short, clean joke that is suitable for all ages.")
    reference = Reference.compute(smollm2_f16, [pair], tmp_path, threads=2)
    result = compare(quants["q4_0"], reference, threads=2)

    def probs(path: Path) -> tuple[np.ndarray, int]:
        with Engine(path, n_ctx=256, n_threads=2) as engine:
            prompt = engine.tokenize(build_prompt(pair.prompt), add_bos=True)
            tokens = prompt + engine.tokenize(pair.optimized_prompt, add_bos=False)
            logits = engine.logits(tokens).astype(np.float64)[len(prompt) - 1 : -1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True), len(tokens) - len(prompt)

    (p, n), (q, _) = probs(smollm2_f16), probs(quants["q4_0"])
    kl = np.sum(p * np.log(p / q), axis=1)
    assert result.tokens == n
    assert result.kl_mean == pytest.approx(kl.mean(), rel=1e-6, abs=1e-9)
    assert result.kl_max == pytest.approx(kl.max(), rel=1e-6, abs=1e-9)


def test_result_is_a_json_record_with_the_perplexity_ratio() -> None:
    result = VerifyResult("bpo:f16", 3, 90, 0.01, 0.05, 0.2, 0.95, 5.5, 5.0)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ppl_ratio"] == pytest.approx(1.1) and data["kl_mean"] == 0.01 and data["reference"] == "bpo:f16"


def test_the_shipped_eval_set_has_32_pairs() -> None:
    pairs = load_pairs()
    assert len(pairs) == 32 and all(p.prompt and p.optimized_prompt for p in pairs)


def test_eval_data_may_be_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{"prompt": "a", "optimized_prompt": "b", "extra": 1}]))
    assert load_pairs(path) == [EvalPair("a", "b")]


@pytest.mark.parametrize("content", ['[{"prompt": "a"}]', "not json", "", '{"prompt": "a", "optimized_prompt": 1']
                         )
def test_bad_eval_data_is_a_one_line_usage_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError) as err:
        load_pairs(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
