"""BPO on a model: the reference's request (tokens, bans, stops, min length) and its aggressive rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece
from _checkpoints import build_llama2_pad_safetensors

import bpo_local
from bpo_local.cli.advice import describe
from bpo_local.models.convert import convert_checkpoint
from bpo_local.presets import AGGRESSIVE, STABLE, build_prompt

PROMPT = "how can I create a profile on Facebook?\n[/INST] </s> typed by the user 🦙"


@pytest.fixture(scope="module")
def llama2_bpo(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> bpo_local.Optimizer:
    """A tiny random-weight Llama with BPO's real tokenizer, converted by our converter."""
    root = tmp_path_factory.mktemp("tiny-llama2")
    checkpoint = build_llama2_pad_safetensors(root / "hf", llama2_tokenizer)
    gguf = convert_checkpoint(checkpoint.path, root / "tiny.gguf", outtype="f16").path
    with bpo_local.load(gguf, threads=2) as optimizer:
        yield optimizer


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> bpo_local.Optimizer:
    with bpo_local.load(smollm2_gguf, threads=2) as optimizer:
        yield optimizer


def test_request_is_the_reference_one(llama2_bpo: bpo_local.Optimizer, llama2_tokenizer: Path) -> None:
    """Token ids as transformers' LlamaTokenizer gives them: BOS + template, bad words without BOS,
    eos_token_id=[eos, 13], min_length = prompt + len(user prompt ids with BOS) + 5."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(llama2_tokenizer))
    request = llama2_bpo.request_for(PROMPT, AGGRESSIVE, seed=7)
    assert request.prompt == tuple([sp.bos_id(), *sp.encode(build_prompt(PROMPT))])
    assert request.banned == tuple(tuple(sp.encode(word)) for word in AGGRESSIVE.banned_strings)
    assert request.stop_tokens == {sp.eos_id(), 13}
    assert request.min_new_tokens == 1 + len(sp.encode(PROMPT)) + 5
    assert (request.n, request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (5, 0.9, 0.9, 50)

    stable = llama2_bpo.request_for(PROMPT, STABLE, seed=7)
    assert stable.stop_tokens == {sp.eos_id()} and stable.banned == () and stable.min_new_tokens == 0
    assert (stable.n, stable.sampling.temperature, stable.max_new_tokens) == (1, 0.6, 1024)


def test_aggressive_candidates_respect_min_length_and_stops(llama2_bpo: bpo_local.Optimizer) -> None:
    result = llama2_bpo.optimize(PROMPT, mode="aggressive", seed=3, max_tokens=40)
    request = llama2_bpo.request_for(PROMPT, AGGRESSIVE, seed=3)
    assert len(result.candidates) == 5 and result.timings.prompt_tokens == len(request.prompt)
    for raw, reason in zip(result.raw, result.finish_reasons):
        generated = llama2_bpo.backend.tokenize(raw, add_bos=False)
        assert reason in ("stop", "length")
        assert reason == "length" or len(generated) >= request.min_new_tokens


def test_aggressive_on_a_real_model_stops_at_newline_and_never_shows_a_ban(smollm2: bpo_local.Optimizer) -> None:
    result = smollm2.optimize("Write a short poem about the sea", mode="aggressive", seed=11, max_tokens=48)
    assert len(result.candidates) == len(result.raw) == len(result.finish_reasons) == 5
    assert "stop" in result.finish_reasons, result.finish_reasons  # else the newline check below checks nothing
    for raw, candidate, reason in zip(result.raw, result.candidates, result.finish_reasons):
        if reason == "stop":
            assert "\n" not in raw
        for banned in AGGRESSIVE.banned_strings:  # the engine never generates them (post-processing would hide it)
            assert banned not in raw
        for marker in AGGRESSIVE.cut_markers:  # what post-processing cuts
            assert marker not in candidate


def test_same_seed_same_candidates(smollm2: bpo_local.Optimizer) -> None:
    def run() -> bpo_local.OptimizeResult:
        return smollm2.optimize("Explain recursion", mode="aggressive", n=3, seed=5, max_tokens=24)

    run()  # caches the prompt: the two runs compared start from the same cache state, as llama.cpp needs to repeat
    first, again = run(), run()
    assert first.candidates == again.candidates and first.seed == again.seed == 5
    assert first.timings.cached_prompt_tokens == again.timings.cached_prompt_tokens > 0


def test_stream_yields_text_then_result(smollm2: bpo_local.Optimizer) -> None:
    stream = smollm2.stream("Tell me about tides", seed=2, max_tokens=16, temperature=0)
    streamed = "".join(delta.text for delta in stream)
    assert streamed.strip() and stream.result.raw[0] == streamed
    assert stream.result.text == streamed.strip()
    assert stream.result.params["temperature"] == 0


def test_cancel_keeps_the_partial_text(smollm2: bpo_local.Optimizer) -> None:
    stream = smollm2.stream("Tell me a joke", seed=2, max_tokens=64, temperature=0)
    pieces = []
    for delta in stream:
        pieces.append(delta.text)
        if len(pieces) == 3:
            stream.cancel()
            break
    assert stream.result.cancelled and stream.result.raw[0] == "".join(pieces)
    assert smollm2.optimize("Tell me a joke", seed=2, max_tokens=4).finish_reasons == ("length",)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_a_usage_error(smollm2: bpo_local.Optimizer, prompt: str) -> None:
    with pytest.raises(bpo_local.UsageError, match="empty prompt"):
        smollm2.optimize(prompt)


def test_unknown_mode_names_the_choices(smollm2: bpo_local.Optimizer) -> None:
    with pytest.raises(bpo_local.UsageError, match="stable, aggressive"):
        smollm2.optimize("hi", mode="wild")


def test_optimize_many_answers_in_input_order_with_bad_prompts_in_place(smollm2: bpo_local.Optimizer) -> None:
    prompts = ["Write a poem about autumn", "", "Explain tides", "please " * 5000, "Name a river", "   "]
    out = list(smollm2.optimize_many(iter(prompts), parallel=3, seed=8, max_tokens=6, temperature=1.0))
    assert len(out) == len(prompts)
    assert [type(o).__name__ for o in out] == ["OptimizeResult", "UsageError", "OptimizeResult", "PromptTooLong",
                                               "OptimizeResult", "UsageError"]
    assert [o.prompt for o in out if isinstance(o, bpo_local.OptimizeResult)] == [prompts[0], prompts[2], prompts[4]]
    assert all(o.seed == 8 and o.params["max_tokens"] == 6 for o in out if isinstance(o, bpo_local.OptimizeResult))


def test_optimize_many_one_at_a_time_equals_optimize(smollm2: bpo_local.Optimizer) -> None:
    prompts = ["Explain recursion", "Write a limerick", "Plan a trip to Rome"]
    options = {"mode": "aggressive", "n": 2, "seed": 4, "max_tokens": 12}
    forget_cache(smollm2)  # both sides start cold: llama.cpp repeats a generation only from the same cache state
    many = list(smollm2.optimize_many(prompts, parallel=1, **options))
    forget_cache(smollm2)
    one_by_one = [smollm2.optimize(p, **options) for p in prompts]
    assert [m.candidates for m in many] == [o.candidates for o in one_by_one]
    assert [m.timings.cached_prompt_tokens for m in many] == [o.timings.cached_prompt_tokens for o in one_by_one]


def forget_cache(optimizer: bpo_local.Optimizer) -> None:
    """Leave only one end-of-sequence token cached: the next prompt is evaluated from its start."""
    optimizer.backend.logits([optimizer.backend.eos_token])


def test_optimize_many_rejects_a_bad_parallel_at_once(smollm2: bpo_local.Optimizer) -> None:
    with pytest.raises(bpo_local.UsageError, match="^parallel must be at least 1") as info:
        smollm2.optimize_many(["hi"], parallel=0)
    assert describe(info.value) == "--parallel must be at least 1 (got 0)"
