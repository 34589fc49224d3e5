"""The exact request bodies per preset, as pure functions (no server, no GPU needed)."""

from __future__ import annotations

from bpo_local.backend import Request, Sampling
from bpo_local.backends.remote import llama_server, vllm

EOS, NEWLINE = 2, 13
STABLE = Request((1, 518, 25580), 1024, Sampling(0.6, 0.9, 50, seed=7), stop_tokens=frozenset({EOS}))
AGGRESSIVE = Request((1, 518, 25580), 1024, Sampling(0.9, 0.9, 50, seed=7), n=5,
                     stop_tokens=frozenset({EOS, NEWLINE}), min_new_tokens=14)


def test_vllm_stable_body_sets_every_value() -> None:
    body = vllm.completion_body(STABLE, model="bpo", seed=7, eos_token=EOS)
    assert body == {
        "model": "bpo", "prompt": [1, 518, 25580], "max_tokens": 1024, "n": 1, "temperature": 0.6, "top_k": 50,
        "top_p": 0.9, "min_p": 0.0, "seed": 7, "min_tokens": 0, "stop_token_ids": [], "stop": [], "ignore_eos": False,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "logit_bias": {},
        "skip_special_tokens": True, "include_stop_str_in_output": False, "echo": False, "return_token_ids": True,
        "stream": True,
    }


def test_vllm_aggressive_body_has_min_tokens_and_the_newline_stop() -> None:
    body = vllm.completion_body(AGGRESSIVE, model="bpo", seed=7, eos_token=EOS)
    assert (body["n"], body["min_tokens"], body["stop_token_ids"], body["temperature"]) == (5, 14, [NEWLINE], 0.9)
    off = vllm.completion_body(Request((1,), 4, Sampling(1.0, 1.0, 0), banned=((9,), (3, 4))), model="m", seed=1,
                               eos_token=EOS)
    assert off["top_k"] == -1 and off["logit_bias"] == {"9": -100}  # one-token ban only


def test_llama_server_phases_of_an_aggressive_candidate() -> None:
    phase1 = llama_server.completion_body(AGGRESSIVE, AGGRESSIVE.prompt, seed=9, n_predict=14, hold_stops=True)
    assert phase1["samplers"] == ["temperature", "top_k", "top_p"] and phase1["min_p"] == 0.0
    assert phase1["logit_bias"] == [[EOS, False], [NEWLINE, False]] and phase1["n_predict"] == 14
    assert (phase1["repeat_penalty"], phase1["cache_prompt"], phase1["return_tokens"]) == (1.0, True, True)
    phase2 = llama_server.completion_body(AGGRESSIVE, (*AGGRESSIVE.prompt, 5, 6), seed=9 + 2**31, n_predict=1010,
                                          hold_stops=False, slot=1)
    assert phase2["logit_bias"] == [] and phase2["id_slot"] == 1 and phase2["prompt"][-2:] == [5, 6]
