"""The thread tuner on a real engine (SmolLM2 GGUF): it moves each phase to the count its calls run
fastest on, follows a change when told to, leaves a ``--threads`` count alone, and never changes a
seeded result. Its clock is a stopwatch that charges each call by the thread count llama.cpp really
ran it on, so what it decides is deterministic; nothing here is timed."""

from __future__ import annotations

import json

import pytest
from _engine_helpers import chat_prompt

from bpo_local.backend import Request, Sampling
from bpo_local.backends.llamacpp import Engine, physical_cores

SEEDED = Sampling(temperature=0.9, top_p=0.9, top_k=50, seed=11)

needs_two_cores = pytest.mark.skipif(physical_cores() < 2, reason="one core: there is no other count to try")


class Stopwatch:
    """A clock for the tuner: every decode call at n threads lasts ``seconds[n]``. The tuner reads it at
    a call's start and at its end; it records the count each call ran on, as the context says."""

    def __init__(self, engine: Engine, seconds: dict[int, float]) -> None:
        self._engine = engine
        self.seconds = seconds
        self.now = 0.0
        self._reads = 0
        self.ran_on: list[int] = []

    def __call__(self) -> float:
        self._reads += 1
        if self._reads % 2 == 0:  # a call's end
            n = self._engine._lib.llama_n_threads(self._engine._context.ctx)
            self.ran_on.append(n)
            self.now += self.seconds.get(n, 1.0)
        return self.now


def decode_choice(result):
    return {c.phase: c for c in result.timings.threads}["decode"]


@pytest.fixture
def engine(smollm2_gguf):
    with Engine(smollm2_gguf, n_ctx=1024) as eng:
        yield eng


@needs_two_cores
def test_the_tuner_moves_to_the_faster_count_and_back_when_told(engine):
    most = physical_cores()
    prompt = chat_prompt(engine, "Write a haiku about the sea.")
    watch = engine.threads.clock = Stopwatch(engine, {n: 0.01 * n for n in range(1, most + 1)})  # 1 is fastest
    result = engine.generate(Request(prompt, 40, SEEDED)).run()
    assert watch.ran_on[-5:] == [1] * 5
    assert decode_choice(result).threads == 1
    assert decode_choice(result).why.startswith("measured: 1 thread 100 tok/s")

    watch.seconds = {n: 0.01 / n for n in range(1, most + 1)}  # the machine changed: all cores are fastest
    engine.threads.reconsider()
    watch.ran_on.clear()
    result = engine.generate(Request(prompt, 40, SEEDED)).run()
    assert watch.ran_on[-5:] == [most] * 5
    assert decode_choice(result).threads == most


@needs_two_cores
def test_a_slowdown_makes_it_look_again(engine):
    """The speed falling away from where it settled (a core got busy) starts a try at once."""
    prompt = chat_prompt(engine, "Name three rivers.")
    watch = engine.threads.clock = Stopwatch(engine, {n: 0.01 / n for n in range(1, 9)})  # all cores fastest
    engine.generate(Request(prompt, 60, SEEDED)).run()  # settles on every core, tries get rare
    watch.seconds = {1: 0.01, **{n: 0.04 for n in range(2, 9)}}  # now one thread is 4x faster than more
    watch.ran_on.clear()
    result = engine.generate(Request(prompt, 16, SEEDED)).run()
    assert 1 in watch.ran_on[:8] and watch.ran_on[-3:] == [1, 1, 1]
    assert decode_choice(result).threads == 1


def test_threads_pins_the_count(smollm2_gguf):
    with Engine(smollm2_gguf, n_ctx=1024, n_threads=2) as engine:
        watch = engine.threads.clock = Stopwatch(engine, {1: 0.001, 2: 1.0})  # 1 thread would be far faster
        engine.threads.reconsider()
        result = engine.generate(Request(chat_prompt(engine, "Hi"), 40, SEEDED)).run()
    assert set(watch.ran_on) == {2}
    assert [(c.phase, c.threads, c.why) for c in result.timings.threads] == [
        ("decode", 2, "pinned by --threads"), ("prompt", 2, "pinned by --threads")]


@needs_two_cores
@pytest.mark.parametrize("n", [1, 3])
def test_a_seeded_run_is_the_same_whatever_counts_the_tuner_picked(smollm2_gguf, n):
    """Pinned at 1 thread, pinned at every core, and tuned by a clock that keeps it switching: the same
    tokens. The prompt is long enough (600+ tokens) for the KV cache to pass 512 cells, where flash
    attention's CPU kernel would split a one-token decode by thread."""
    text = "Tell me everything about lighthouses, their keepers, their lamps and their history. " * 40

    def run(threads, seconds=None):
        with Engine(smollm2_gguf, n_ctx=2048, n_threads=threads) as engine:
            prompt = chat_prompt(engine, text)
            assert len(prompt) > 600
            if seconds is not None:
                engine.threads.clock = watch = Stopwatch(engine, seconds)
            result = engine.generate(Request(prompt, 48, SEEDED, n=n)).run()
            if seconds is not None:
                assert len(set(watch.ran_on)) > 1  # it did switch
        return [c.tokens for c in result.completions]

    flaky = {1: 0.01}  # 1 thread fastest, others 1 s: it moves there, and tries the others now and then
    assert run(1) == run(physical_cores()) == run(None, flaky)


def test_json_timings_say_which_threads_and_why(run_cli, smollm2_gguf):
    opts = ("--model", str(smollm2_gguf), "-n", "1", "--seed", "3", "--max-tokens", "16", "--json", "--no-log")
    pinned = run_cli("optimize", "Tell me about tides", "--threads", "1", *opts)
    tuned = run_cli("optimize", "Tell me about tides", *opts)
    assert pinned.returncode == tuned.returncode == 0, pinned.stderr + tuned.stderr
    assert json.loads(pinned.stdout)["timings"]["threads"] == {
        "decode": {"threads": 1, "why": "pinned by --threads"}, "prompt": {"threads": 1, "why": "pinned by --threads"}}
    threads = json.loads(tuned.stdout)["timings"]["threads"]
    assert set(threads) == {"decode", "prompt"}
    assert 1 <= threads["decode"]["threads"] <= physical_cores() and threads["decode"]["why"]


def test_it_starts_on_the_cores_the_run_queue_leaves_free(tmp_path):
    from bpo_local.backends.llamacpp.threads import free_cores

    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")  # this thread and two others
    assert free_cores(4, stat) == 2 and free_cores(2, stat) == 1
    stat.write_text("procs_running 1\n")
    assert free_cores(4, stat) == 4
    assert free_cores(4, tmp_path / "absent") == 4  # not Linux: every core
