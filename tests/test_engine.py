"""Engine on a real GGUF (SmolLM2-135M Q4_1): greedy fidelity, seeds, shared prompts, prefix cache,
bans, stops, context limits, cancellation, tokenizer and load errors."""

from __future__ import annotations

import os
import shutil
import signal
import threading

import numpy as np
import pytest
from _engine_helpers import chat_prompt, plain_logits

from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine
from bpo_local.cli.advice import describe
from bpo_local.errors import ModelLoadError, ModelNotFound, PromptTooLong, UsageError

GREEDY = Sampling(temperature=0)


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    with Engine(smollm2_gguf, n_threads=1) as eng:
        yield eng


@pytest.fixture(scope="module")
def small_engine(smollm2_gguf):
    """A 256-token context with 2 candidate slots: context-full and multi-wave behaviour."""
    with Engine(smollm2_gguf, n_threads=1, n_ctx=256, n_seq_max=3) as eng:
        yield eng


@pytest.fixture(scope="module")
def haiku(engine):
    return chat_prompt(engine, "Write a haiku about the sea.")


def greedy(engine, prompt, max_new_tokens=24, **kw):
    return engine.generate(Request(prompt, max_new_tokens, GREEDY, **kw)).run().completions[0]


def perf(engine):
    return engine._lib.llama_perf_context(engine._context.ctx)


def reset_perf(engine):
    engine._lib.llama_perf_context_reset(engine._context.ctx)


def prime(engine, prompt):
    """Cache exactly ``prompt``, evaluated from position 0: the next generation of it evaluates only its
    last token, in the same batch and KV cells every time. llama.cpp repeats a generation bit for bit
    only from the same cache state, so every run compared with another starts here."""
    engine.logits(prompt)


def assert_greedy_for(engine, prompt, tokens, logits=None):
    """Each token is the argmax, within float noise, of teacher-forced logits of ``prompt`` and the
    tokens before it (by default the engine's own, evaluated from position 0 without the cache)."""
    if logits is None:
        logits = engine.logits(prompt + tuple(tokens[:-1]))[len(prompt) - 1:]
    chosen = logits[np.arange(len(tokens)), list(tokens)]
    assert (logits.max(axis=1) - chosen).max() < 0.25


# fidelity and reproducibility


def test_greedy_is_greedy_for_a_plain_llama_cpp_loop(engine, haiku, smollm2_gguf):
    """Each token is the argmax of the logits the simplest llama.cpp loop gives for the prompt and our
    tokens so far (within float noise: another context's batch shapes round differently)."""
    ours = greedy(engine, haiku, max_new_tokens=32)
    assert_greedy_for(engine, haiku, ours.tokens, plain_logits(smollm2_gguf, haiku, ours.tokens[:-1], n_threads=1))
    assert ours.finish_reason == "length"
    assert ours.text == engine.detokenize(ours.tokens)


def test_same_seed_reproduces_and_other_seeds_differ(engine, haiku):
    def run(seed):
        prime(engine, haiku)
        return engine.generate(Request(haiku, 20, Sampling(temperature=1.0, seed=seed), n=3)).run()

    first, again, other = run(7), run(7), run(8)
    assert [c.tokens for c in first.completions] == [c.tokens for c in again.completions]
    assert first.seed == 7
    assert [c.tokens for c in first.completions] != [c.tokens for c in other.completions]
    assert len({c.tokens for c in first.completions}) > 1, "sequences of one request use different seeds"


def test_sequence_i_uses_seed_plus_i(engine, haiku):
    """The first tokens are drawn from the prompt's logits, the same for 3 sequences as for 1 (later steps
    decode 3 rows instead of 1, which rounds differently); a flat distribution makes each seed's draw tell."""
    flat = {"temperature": 3.0}

    def first_tokens(seed, n):
        prime(engine, haiku)
        result = engine.generate(Request(haiku, 1, Sampling(**flat, seed=seed), n=n)).run()
        return [c.tokens[0] for c in result.completions]

    together = {seed: first_tokens(seed, 3) for seed in (100, 200, 300, 400)}
    for seed, tokens in together.items():
        assert tokens[2] == first_tokens(seed + 2, 1)[0]
        assert tokens[1] == first_tokens(seed + 1, 1)[0]
    assert any(len(set(tokens)) == 3 for tokens in together.values()), "the draws tell the seeds apart"


def test_no_seed_picks_one_and_reports_it(engine, haiku):
    prime(engine, haiku)
    result = engine.generate(Request(haiku, 8, Sampling(temperature=1.0))).run()
    prime(engine, haiku)
    replay = engine.generate(Request(haiku, 8, Sampling(temperature=1.0, seed=result.seed))).run()
    assert replay.completions[0].tokens == result.completions[0].tokens


# shared prompt, prefix cache, timings


def test_n_candidates_evaluate_the_prompt_once_and_reuse_it_next_call(engine):
    prompt = chat_prompt(engine, "List three fruits.")
    engine.logits(chat_prompt(engine, "Something else entirely, with other words."))  # cache a different prompt
    reset_perf(engine)
    first = engine.generate(Request(prompt, 1, Sampling(seed=1), n=5)).run()
    assert len(first.completions) == 5
    t = first.timings
    assert t.prompt_tokens == len(prompt)
    assert perf(engine).n_p_eval == len(prompt) - t.cached_prompt_tokens, "the prompt was evaluated once for 5"
    assert t.cached_prompt_tokens < 5

    reset_perf(engine)
    second = engine.generate(Request(prompt, 1, GREEDY, n=5)).run()
    assert second.timings.cached_prompt_tokens == len(prompt) - 1
    assert perf(engine).n_p_eval <= 1, "only the last prompt token is evaluated again"
    for completion in second.completions:  # the reused cache holds the right prompt
        assert_greedy_for(engine, prompt, completion.tokens)


def test_prefix_reuse_evaluates_only_the_new_suffix(engine):
    a = chat_prompt(engine, "Tell me about cats and their habits.")
    b = chat_prompt(engine, "Tell me about dogs and their habits.")
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    greedy(engine, a, 4)
    result = engine.generate(Request(b, 12, GREEDY)).run()
    assert result.timings.cached_prompt_tokens == common
    assert_greedy_for(engine, b, result.completions[0].tokens)  # b's own logits, not a's cached suffix


def test_timings_are_filled(engine, haiku):
    t = engine.generate(Request(haiku, 16, GREEDY, n=2)).run().timings
    assert t.generated_tokens == 32
    assert 0 < t.prompt_seconds <= t.first_token_seconds <= t.total_seconds
    assert t.decode_seconds > 0 and t.tokens_per_second > 0


def test_token_events_stream_each_sequence_text(engine, haiku):
    generation = engine.generate(Request(haiku, 30, Sampling(temperature=0.9, seed=3), n=3,
                                         stop_tokens=frozenset({engine.eos_token})))
    events = list(generation)
    assert [c.index for c in generation.result.completions] == [0, 1, 2]
    for completion in generation.result.completions:
        mine = [e for e in events if e.index == completion.index]
        assert tuple(e.token for e in mine) == completion.tokens
        assert "".join(e.text for e in mine) == completion.text


# stops, bans, limits


def test_stop_token_ends_the_sequence_and_is_not_output(engine, haiku):
    prime(engine, haiku)
    free = greedy(engine, haiku, 60)
    stop = free.tokens[5]
    prime(engine, haiku)
    stopped = greedy(engine, haiku, 60, stop_tokens=frozenset({stop}))
    assert stopped.finish_reason == "stop"
    assert stopped.tokens == free.tokens[:5]


def test_min_new_tokens_holds_back_stop_tokens(engine, haiku):
    eos = frozenset({engine.eos_token})
    natural = greedy(engine, haiku, 100, stop_tokens=eos)
    assert natural.finish_reason == "stop" and len(natural.tokens) < 30
    held = greedy(engine, haiku, 100, stop_tokens=eos, min_new_tokens=len(natural.tokens) + 10)
    assert len(held.tokens) >= len(natural.tokens) + 10
    assert engine.eos_token not in held.tokens


def test_max_new_tokens_ends_with_length(engine, haiku):
    result = engine.generate(Request(haiku, 5, Sampling(temperature=1.0, seed=1), n=2)).run()
    assert [(len(c.tokens), c.finish_reason) for c in result.completions] == [(5, "length")] * 2


def test_a_banned_single_token_never_appears(engine, haiku):
    prime(engine, haiku)
    free = greedy(engine, haiku, 24)
    banned = free.tokens[3]
    prime(engine, haiku)
    result = greedy(engine, haiku, 24, banned=((banned,),))
    assert banned not in result.tokens
    assert result.tokens[:3] == free.tokens[:3]


def test_a_banned_sequence_is_cut_where_greedy_would_complete_it(engine, haiku):
    prime(engine, haiku)
    free = greedy(engine, haiku, 24)
    pair = (free.tokens[4], free.tokens[5])
    prime(engine, haiku)
    result = greedy(engine, haiku, 24, banned=(pair,))
    assert result.tokens[:5] == free.tokens[:5]
    assert result.tokens[5] != free.tokens[5]
    assert all(result.tokens[i:i + 2] != pair for i in range(len(result.tokens) - 1))


def test_bans_look_at_the_prompt_like_transformers(engine, haiku):
    free = greedy(engine, haiku, 4)
    result = greedy(engine, haiku, 4, banned=((haiku[-1], free.tokens[0]),))
    assert result.tokens[0] != free.tokens[0]


def test_full_context_ends_sequences_with_length(small_engine):
    prompt = chat_prompt(small_engine, "Write a very long story about a dragon and a knight.")
    result = small_engine.generate(Request(prompt, 1000, Sampling(temperature=1.0, seed=5), n=2)).run()
    assert [c.finish_reason for c in result.completions] == ["length", "length"]
    # the last survivor fills the context: its newest token is sampled but never needs a cell
    assert max(len(prompt) + len(c.tokens) for c in result.completions) == small_engine.info.n_ctx + 1


def test_more_candidates_than_slots_run_in_waves(small_engine):
    prompt = chat_prompt(small_engine, "Name an animal.")
    prime(small_engine, prompt)  # every wave, and the run alone, evaluate only the last prompt token
    result = small_engine.generate(Request(prompt, 6, Sampling(temperature=1.0, seed=40), n=5)).run()
    assert [c.index for c in result.completions] == [0, 1, 2, 3, 4]
    assert result.timings.cached_prompt_tokens == len(prompt) - 1
    prime(small_engine, prompt)
    alone = small_engine.generate(Request(prompt, 6, Sampling(temperature=1.0, seed=44))).run()
    assert result.completions[4].tokens == alone.completions[0].tokens


def test_prompt_longer_than_the_context_names_both_sizes(small_engine):
    prompt = tuple(small_engine.tokenize("word " * 400, add_bos=False))
    with pytest.raises(PromptTooLong) as err:
        small_engine.generate(Request(prompt, 10))
    message = str(err.value)
    assert f"prompt is {len(prompt)} tokens" in message and "context holds 256" in message
    assert "8192" in message and "--" not in message and "\n" not in message  # facts; the CLI adds the flag
    assert describe(err.value) == f"{message}; raise it with --ctx"


def test_invalid_sampling_is_a_usage_error(engine, haiku):
    for bad in (Request(haiku, 10, Sampling(temperature=-1)), Request(haiku, 10, Sampling(top_p=0)),
                Request(haiku, 0), Request(haiku, 10, n=0), Request((), 10)):
        with pytest.raises(UsageError):
            engine.generate(bad)


# cancellation and interrupts


def test_cancel_keeps_the_text_so_far_and_the_engine_stays_usable(engine, haiku):
    prime(engine, haiku)  # the reference, and the run after the interrupted one, evaluate only the last token
    reference = greedy(engine, haiku, 24)
    generation = engine.generate(Request(haiku, 200, Sampling(temperature=1.0, seed=2), n=3))
    seen = []
    for event in generation:
        seen.append(event)
        if len(seen) == 7:
            generation.cancel()
    assert len(seen) == 7
    result = generation.result
    assert {c.finish_reason for c in result.completions} == {"cancelled"}
    assert sum(len(c.tokens) for c in result.completions) == 7
    assert greedy(engine, haiku, 24).tokens == reference.tokens


def test_abandoned_generation_is_cleaned_by_the_next_request(engine, haiku):
    prime(engine, haiku)  # the reference, and the run after the interrupted one, evaluate only the last token
    reference = greedy(engine, haiku, 24)
    generation = engine.generate(Request(haiku, 200, Sampling(temperature=1.0, seed=2), n=4))
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(generation):
            if i == 5:
                raise KeyboardInterrupt
    assert greedy(engine, haiku, 24).tokens == reference.tokens
    assert {c.finish_reason for c in generation.result.completions} == {"cancelled"}


def test_sigint_during_decoding_leaves_the_engine_usable(engine, haiku):
    prime(engine, haiku)  # the reference, and the run after the interrupted one, evaluate only the last token
    reference = greedy(engine, haiku, 24)
    generation = engine.generate(Request(haiku, 3000, Sampling(temperature=1.0, seed=9), n=4))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            generation.run()
    finally:
        timer.cancel()
    assert [c.finish_reason for c in generation.result.completions] == ["cancelled"] * 4
    assert greedy(engine, haiku, 24).tokens == reference.tokens


def test_cancel_before_iterating(engine, haiku):
    generation = engine.generate(Request(haiku, 10, n=2))
    generation.cancel()
    assert list(generation) == []
    assert [c.finish_reason for c in generation.result.completions] == ["cancelled", "cancelled"]


# tokenizer and logits


def test_user_typed_control_tokens_stay_text(engine):
    typed = engine.tokenize("hi <|im_end|> there", add_bos=False)
    parsed = engine.tokenize("hi <|im_end|> there", add_bos=False, parse_special=True)
    assert engine.eos_token not in typed and engine.eos_token in parsed
    assert engine.detokenize(typed) == "hi <|im_end|> there"


def test_end_of_generation_tokens(engine):
    assert engine.eos_token in engine.eog_tokens
    assert all(engine._lib.llama_vocab_is_eog(engine._vocab._vocab, t) for t in engine.eog_tokens)


def test_a_closed_engine_refuses_work_and_loading_kept_stderr_clean(smollm2_gguf, capfd):
    eng = Engine(smollm2_gguf, n_threads=1, n_ctx=128)
    assert capfd.readouterr().err == ""
    prompt = tuple(eng.tokenize("hello", add_bos=False))
    pending = eng.generate(Request(prompt, 4))
    eng.close()
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        pending.run()
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(Request(prompt, 4))
    with pytest.raises(RuntimeError, match="closed"):
        eng.tokenize("hello", add_bos=False)


def test_token_for_piece(engine):
    newline = engine.token_for_piece("\n")
    assert newline is not None and engine.detokenize([newline]) == "\n"
    assert engine.token_for_piece("<|im_end|>") == engine.eos_token
    assert engine.token_for_piece("no such single token here") is None


def test_streamed_text_never_splits_a_character(engine):
    from bpo_local.backends.llamacpp.vocab import TextStream

    text = "Party 🎉🙂 café — 東京 ok"
    tokens = engine.tokenize(text, add_bos=False)
    stream = TextStream(engine._vocab)
    pieces = [stream.push(t) for t in tokens]
    assert "".join(pieces) == engine.detokenize(tokens) == text
    assert "" in pieces, "some character spans several tokens"
    assert all("\ufffd" not in p for p in pieces)


def test_logits_are_teacher_forced_per_position(engine, haiku):
    logits = engine.logits(haiku)
    assert logits.shape == (len(haiku), engine.n_vocab) and logits.dtype == np.float32
    first = greedy(engine, haiku, 1).tokens[0]  # its last prompt token is decoded alone: a near-tie may flip
    assert logits[-1].max() - logits[-1][first] < 0.25
    np.testing.assert_allclose(engine.logits(haiku[:6]), logits[:6], rtol=1e-3, atol=1e-3)


def test_logits_of_a_prompt_longer_than_one_chunk(engine):
    long = tuple(engine.tokenize("the quick brown fox jumps over the lazy dog " * 70, add_bos=False))
    assert len(long) > 600
    logits = engine.logits(long)
    assert logits.shape == (len(long), engine.n_vocab)
    first = greedy(engine, long, 1).tokens[0]
    assert logits[-1].max() - logits[-1][first] < 0.25


def test_info_describes_the_model(engine, smollm2_gguf):
    info = engine.info
    assert info.architecture == "llama" and info.file_type == "Q4_1"
    assert info.n_ctx == 4096 and info.n_ctx_train == 8192 and info.n_layer == 30
    assert info.backend == "CPU" and info.gpu_layers == 0
    assert info.size_bytes == smollm2_gguf.stat().st_size and 100e6 < info.n_params < 200e6
    assert "<|im_start|>" in info.chat_template


def test_importing_the_engine_does_not_load_llama_cpp():
    import subprocess
    import sys

    code = "import sys, bpo_local.backends.llamacpp; print(sorted(m for m in ('llama_cpp', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_system_info_reports_this_machine():
    from bpo_local.backends.llamacpp import physical_cores, system_info

    info = system_info()
    assert 1 <= info.physical_cores == physical_cores() <= (os.cpu_count() or 1)
    assert any(d.backend == "CPU" for d in info.devices)
    assert info.llama_cpp_python and "CPU" in info.features


# load errors


def test_missing_file_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound) as err:
        Engine(tmp_path / "nope.gguf")
    assert "nope.gguf" in str(err.value) and "\n" not in str(err.value)


def test_not_a_gguf_is_a_load_error(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello, I am not a model\n")
    with pytest.raises(ModelLoadError, match="notes.gguf is truncated or not a GGUF file; re-download"):
        Engine(path)


def test_truncated_gguf_is_a_load_error_and_stderr_stays_clean(tmp_path, smollm2_gguf, capfd):
    path = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(3_000_000))
    with pytest.raises(ModelLoadError) as err:
        Engine(path, n_threads=1)
    assert "cut.gguf" in str(err.value) and "\n" not in str(err.value)
    assert capfd.readouterr().err == ""


def test_bad_settings_are_usage_errors(smollm2_gguf):
    for settings in ({"n_ctx": 0}, {"n_threads": 0}, {"n_seq_max": 1}):
        with pytest.raises(UsageError):
            Engine(smollm2_gguf, **settings)


def test_directory_is_a_load_error(tmp_path):
    shutil.os.mkdir(tmp_path / "model.gguf")
    with pytest.raises(ModelLoadError, match="is a directory"):
        Engine(tmp_path / "model.gguf")


SIGNALS_DURING_LOAD = """
import signal, sys, threading, time
from bpo_local.backends.llamacpp.native import llama, set_verbose

lib = llama()
set_verbose(False)
state = {"loading": False, "sent": 0, "ran_while_loading": 0}

def handler(signum, frame):  # where it runs: this script, threading, or (a Python log callback) elsewhere
    state["ran_while_loading"] += state["loading"] and frame.f_code.co_filename not in ("<string>", threading.__file__)

def send():
    while state["loading"]:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        state["sent"] += 1
        time.sleep(0.0005)

signal.signal(signal.SIGUSR1, handler)
state["loading"] = True
sender = threading.Thread(target=send)
sender.start()
model = lib.llama_model_load_from_file(sys.argv[1].encode(), lib.llama_model_default_params())
state["loading"] = False
sender.join()
print(state["sent"], state["ran_while_loading"], bool(model))
"""


def test_no_python_runs_while_llama_cpp_logs_so_ctrl_c_is_never_lost(smollm2_f16):
    """llama.cpp logs hundreds of lines while a model loads; a Python log callback ran Python each time, so a
    Ctrl-C pending then was raised inside the callback, where ctypes prints "Exception ignored" and drops it (the
    command went on). Signals sent all through a load must find no Python of llama.cpp's running."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SIGNALS_DURING_LOAD, str(smollm2_f16)], capture_output=True,
                         text=True, check=True, timeout=120)
    sent, ran_while_loading, loaded = out.stdout.split()
    assert int(sent) > 10 and loaded == "True"
    assert int(ran_while_loading) == 0 and "Exception ignored" not in out.stderr
