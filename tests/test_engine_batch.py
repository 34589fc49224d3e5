"""Continuous batching (Engine.generate_many): the same outputs as one request after another, per-request
seeds, waves, prefix reuse, context reservation, per-request errors and cancellation.

Exact comparisons run on a tiny F32 Llama (BPO's tokenizer, random weights, built by our converter).
On a quantized model they may not: a batch puts a request's KV cells wherever finished requests freed
them, so attention sums run in another order, and SmolLM2 Q4_1's greedy choice flips where the top two
logits are within ~0.1 (seen after 15-30 tokens). The SmolLM2 tests check what does not hinge on that.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _engine_helpers import chat_prompt

from bpo_local.backend import Request, RequestDone, Sampling
from bpo_local.backends.llamacpp import Engine
from bpo_local.errors import PromptTooLong
from bpo_local.presets import build_prompt

GREEDY = Sampling(temperature=0, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_f32: Path) -> Engine:
    """3 sequence slots: more requests than slots, and n=5 runs in waves."""
    with Engine(tiny_f32, n_threads=1, n_ctx=1024, n_seq_max=4) as engine:
        yield engine


@pytest.fixture(scope="module")
def bpo_prompts(tiny: Engine, bpo_test_data: Path) -> list[tuple[int, ...]]:
    """BPO-templated prompts of different lengths (they share the template's prefix)."""
    texts = [row["prompt"] for row in json.loads(bpo_test_data.read_text(encoding="utf-8"))[:6]]
    prompts = [tuple(tiny.tokenize(build_prompt(t), add_bos=True)) for t in texts]
    assert len({len(p) for p in prompts}) > 3
    return prompts


def sequential(engine: Engine, requests: list[Request]) -> list[tuple]:
    return [outcome(engine.generate(r).run()) for r in requests]


def outcome(result) -> tuple:
    return result.seed, [(c.tokens, c.text, c.finish_reason) for c in result.completions]


def run_many(engine: Engine, requests: list[Request], **kw) -> tuple[list[tuple], list]:
    """generate_many's outcomes by request index, and its events."""
    events = list(engine.generate_many(requests, **kw))
    done = {e.index: e.result for e in events if isinstance(e, RequestDone)}
    assert sorted(done) == list(range(len(requests)))
    return [outcome(done[i]) for i in range(len(requests))], events


def test_greedy_batch_equals_one_request_after_another(tiny: Engine, bpo_prompts) -> None:
    requests = [Request(p, 20 + 4 * i, GREEDY) for i, p in enumerate(bpo_prompts)]
    batched, events = run_many(tiny, requests)
    assert batched == sequential(tiny, requests)
    for index, (_, completions) in enumerate(batched):  # each request's events stream its own text
        mine = [e for e in events if isinstance(e, tuple) and e[0] == index]
        assert tuple(e.token for _, e in mine) == completions[0][0]
        assert "".join(e.text for _, e in mine) == completions[0][1]


def test_mixed_requests_keep_their_own_seeds_stops_bans_and_limits(tiny: Engine, bpo_prompts) -> None:
    newline = tiny.token_for_piece("\n")
    free = tiny.generate(Request(bpo_prompts[1], 8, GREEDY)).run().completions[0].tokens
    requests = [
        Request(bpo_prompts[0], 12, Sampling(temperature=0.9, top_p=0.9, top_k=50, seed=3)),
        Request(bpo_prompts[1], 16, Sampling(temperature=0.9, top_k=50, seed=4), n=3,
                stop_tokens=frozenset({tiny.eos_token, newline}), min_new_tokens=4, banned=((free[2],),)),
        Request(bpo_prompts[2], 10, GREEDY, stop_tokens=frozenset({free[0]})),
        Request(bpo_prompts[3], 14, Sampling(temperature=1.2, seed=5), n=5),  # > 3 slots: waves
        Request(bpo_prompts[4], 6, Sampling(temperature=0.7, seed=6), n=2),
        Request(bpo_prompts[5], 9, GREEDY),
    ]
    batched, _ = run_many(tiny, requests)
    assert batched == sequential(tiny, requests)
    assert [len(c) for _, c in batched] == [1, 3, 1, 5, 2, 1]


def test_max_sequences_bounds_the_sequences_in_flight(tiny: Engine, bpo_prompts) -> None:
    requests = [Request(p, 6, Sampling(temperature=1.0, seed=i), n=2) for i, p in enumerate(bpo_prompts[:3])]
    batch = tiny.generate_many(requests, max_sequences=2)
    peak = 0
    for _ in batch:
        peak = max(peak, len(batch._live))
    assert peak == 2
    assert [outcome(batch.results[i]) for i in range(3)] == sequential(tiny, requests)


def test_by_default_a_server_sized_batch_decodes_together(tiny_f32: Path, bpo_prompts) -> None:
    requests = [Request(bpo_prompts[i % 6], 32, Sampling(temperature=1.0, seed=i)) for i in range(24)]
    with Engine(tiny_f32, n_threads=1, n_ctx=4096) as engine:  # the default sequence slots
        batch = engine.generate_many(requests)
        peak = 0
        for _ in batch:
            peak = max(peak, len(batch._live))
    assert peak == 24  # 16 clients of `serve --parallel 16` are not cut to 15 in flight


def test_later_prompts_reuse_the_shared_prefix(tiny: Engine, bpo_prompts) -> None:
    template = [tuple(tiny.tokenize(build_prompt(x), add_bos=True)) for x in ("a", "b")]
    shared = next(i for i, (a, b) in enumerate(zip(*template)) if a != b)
    tiny.logits(bpo_prompts[0][:1])  # start from an unrelated cache
    results = tiny.generate_many([Request(p, 4, GREEDY) for p in bpo_prompts]).run()
    cached = [results[i].timings.cached_prompt_tokens for i in range(len(bpo_prompts))]
    assert cached[0] <= 1 and all(c >= shared for c in cached[1:]), cached
    for result in results.values():
        t = result.timings
        assert 0 < t.prompt_seconds <= t.first_token_seconds <= t.total_seconds and t.generated_tokens == 4


def test_a_burst_starts_in_one_step_and_shares_the_template_from_a_cold_cache(tiny: Engine, bpo_prompts) -> None:
    """Requests waiting together start together: one decode evaluates all their prompts, the later ones
    joining the first's template tokens (one KV cell, several sequences) instead of evaluating them again."""
    template = [tuple(tiny.tokenize(build_prompt(x), add_bos=True)) for x in ("a", "b")]
    shared = next(i for i, (a, b) in enumerate(zip(*template)) if a != b)
    requests = [Request(p, 6, GREEDY) for p in bpo_prompts[:3]]  # as many as the slots
    expected = sequential(tiny, requests)
    tiny.logits(bpo_prompts[0][:1])  # nothing of the template is cached
    outcomes, events = run_many(tiny, requests)
    assert outcomes == expected
    assert [e[0] for e in events[:3]] == [0, 1, 2]  # every first token comes from the first step
    done = {e.index: e.result for e in events if isinstance(e, RequestDone)}
    assert done[0].timings.cached_prompt_tokens <= 1
    assert all(done[i].timings.cached_prompt_tokens >= shared for i in (1, 2))
    assert tiny.generate(requests[1]).run().timings.cached_prompt_tokens >= shared  # the cache holds the lead


def test_a_batch_closed_after_staging_a_prompt_leaves_the_cache_consistent(tiny: Engine, bpo_prompts) -> None:
    """The first event can come after a prompt is staged and before it is decoded (here: a bad request's
    RequestDone); closing the batch there must not let the next request take the never-evaluated prompt
    as cached."""
    expected = sequential(tiny, [Request(bpo_prompts[2], 5, GREEDY)])
    too_long = bpo_prompts[0] * (1025 // len(bpo_prompts[0]) + 1)  # more than the 1024-token context
    tiny.logits(bpo_prompts[0][:1])  # the staged prompt is not cached: it would be evaluated in the step
    batch = tiny.generate_many([Request(bpo_prompts[2], 5, GREEDY), Request(too_long, 4), Request(bpo_prompts[3], 4)])
    first = next(batch)
    assert isinstance(first, RequestDone) and first.index == 1
    batch.cancel()
    assert sequential(tiny, [Request(bpo_prompts[2], 5, GREEDY)]) == expected


def test_a_request_starts_only_when_the_context_holds_it_at_full_length(tiny_f32: Path, bpo_prompts) -> None:
    """Two requests that each fit alone but not together run one after the other, not cut short."""
    with Engine(tiny_f32, n_threads=1, n_ctx=256, n_seq_max=4) as engine:
        longest = max(len(p) for p in bpo_prompts[:2])
        requests = [Request(p, 256 - longest, GREEDY) for p in bpo_prompts[:2]]
        batch = engine.generate_many(requests)
        peak = 0
        for _ in batch:
            peak = max(peak, len(batch._live))
        assert peak == 1
        lengths = [len(batch.results[i].completions[0].tokens) for i in range(2)]
        assert lengths == [256 - longest] * 2
        assert [outcome(batch.results[i]) for i in range(2)] == sequential(engine, requests)


def test_a_bad_request_is_reported_and_the_others_go_on(tiny: Engine, bpo_prompts) -> None:
    too_long = tuple(tiny.tokenize("word " * 1200, add_bos=True))
    events = list(tiny.generate_many([Request(bpo_prompts[0], 4, GREEDY), Request(too_long, 4),
                                      Request(bpo_prompts[1], 4, GREEDY)]))
    done = {e.index: e for e in events if isinstance(e, RequestDone)}
    assert isinstance(done[1].error, PromptTooLong) and done[1].result is None
    assert done[0].result.completions[0].finish_reason == done[2].result.completions[0].finish_reason == "length"


def test_requests_are_pulled_only_when_they_can_start(tiny: Engine, bpo_prompts) -> None:
    pulled = []

    def requests():
        for i, p in enumerate(bpo_prompts):
            pulled.append(i)
            yield Request(p, 30, GREEDY)

    batch = tiny.generate_many(requests(), max_sequences=2)
    first = next(batch)
    assert first[0] == 0 and pulled == [0, 1]  # two slots: both start in the first step, the third waits unpulled
    batch.cancel()


def test_a_feed_with_nothing_to_start_yet_lets_later_requests_join_the_running_batch(tiny: Engine, bpo_prompts) -> None:
    """A server's queue: None means "nothing now"; a request that arrives later joins mid-flight."""
    requests = [Request(p, 24, GREEDY) for p in bpo_prompts[:3]]
    tokens_of_first = []

    def feed():
        yield requests[0]
        while len(tokens_of_first) < 5:
            yield None
        yield from requests[1:]

    batch = tiny.generate_many(feed())
    joined_while_live = False
    for event in batch:
        if isinstance(event, tuple) and event[0] == 0:
            tokens_of_first.append(event[1].token)
        if isinstance(event, tuple) and event[0] == 2 and 0 not in batch.results:
            joined_while_live = True
    assert len(tokens_of_first) == 24 and joined_while_live
    assert [outcome(batch.results[i]) for i in range(3)] == sequential(tiny, requests)


def test_cancel_request_stops_one_request_and_the_others_go_on(tiny: Engine, bpo_prompts) -> None:
    requests = [Request(p, 30, GREEDY) for p in bpo_prompts[:3]] + [Request(bpo_prompts[3], 30, GREEDY, n=5)]
    batch = tiny.generate_many(requests)
    done = {}
    for event in batch:
        if isinstance(event, RequestDone):
            done[event.index] = event.result
        elif event[0] == 1 and 1 not in done:
            batch.cancel_request(1)
            batch.cancel_request(3)  # not pulled yet (3 slots are busy): it never runs
    assert sorted(done) == [0, 1, 2, 3]
    cancelled = done[1].completions[0]
    assert cancelled.finish_reason == "cancelled" and 1 <= len(cancelled.tokens) < 30
    assert [c.finish_reason for c in done[3].completions] == ["cancelled"] * 5
    assert all(not c.tokens for c in done[3].completions)
    expected = sequential(tiny, [requests[0], requests[2]])
    assert [outcome(done[0]), outcome(done[2])] == expected
    assert cancelled.tokens == expected_prefix(tiny, requests[1], len(cancelled.tokens))


def long_prompt(engine: Engine, tokens: int) -> tuple[int, ...]:
    """A BPO-templated prompt of about ``tokens`` tokens (a pasted text)."""
    def prompt_of(items: int) -> tuple[int, ...]:
        text = " ".join(["The report lists rainfall and river levels by region."] * items)
        return tuple(engine.tokenize(build_prompt(text), add_bos=True))

    per_item = len(prompt_of(11)) - len(prompt_of(1))
    prompt = prompt_of(1 + (tokens - len(prompt_of(1))) * 10 // per_item)
    assert abs(len(prompt) - tokens) < 32
    return prompt


def test_a_long_prompt_is_evaluated_in_pieces_while_the_others_go_on(tiny: Engine, bpo_prompts) -> None:
    """A prompt longer than a micro-batch is evaluated a micro-batch at a time, and the live requests take a step
    between its pieces (before, they waited for the whole prompt); every output is still what each request gets
    alone. An interrupt that lands on a step runs it again, with the same result."""
    requests = [Request(bpo_prompts[0], 40, GREEDY), Request(long_prompt(tiny, 900), 4, GREEDY)]
    pulled_at = []
    tokens = []

    def feed():
        yield requests[0]
        while len(tokens) < 3:
            yield None
        pulled_at.append(len(tokens))
        yield requests[1]

    batch = tiny.generate_many(feed())
    for event in batch:
        if isinstance(event, tuple):
            tokens.append(event[0])
            if len(tokens) in (2, 9):
                tiny._context.interrupt()  # as a cancel from another thread would, with nothing to cancel
    first_of_long = tokens.index(1)
    assert tokens[pulled_at[0]:first_of_long].count(0) >= 2
    assert [outcome(batch.results[i]) for i in range(2)] == sequential(tiny, requests)


def test_a_request_cancelled_from_another_thread_stops_within_its_prompt(smollm2: Engine) -> None:
    """Cancelled while its long prompt is evaluated, a request stops within the micro-batch in flight (before, its
    whole prompt was evaluated first), and the engine answers the next request."""
    prompt = long_prompt(smollm2, 1100)
    batch = smollm2.generate_many([Request(prompt, 4, GREEDY)])
    context = smollm2._context

    def cancel_during_the_first_piece() -> None:
        while batch._prefilling is None:
            time.sleep(0.001)
        batch.cancel_request(0)

    canceller = threading.Thread(target=cancel_during_the_first_piece)
    canceller.start()
    events = list(batch)
    canceller.join()
    assert [type(e) for e in events] == [RequestDone]
    assert events[0].result.completions[0].finish_reason == "cancelled"
    assert len(context.cached) < context.n_ubatch  # at most the prefix it shared with the prompt before
    short = chat_prompt(smollm2, "Name a fruit.")
    assert smollm2.generate(Request(short, 4, GREEDY)).run().completions[0].finish_reason == "length"


def test_ctrl_c_stops_a_prompt_within_the_piece_in_flight(smollm2: Engine) -> None:
    """Ctrl-C while a long prompt is evaluated on the main thread raises at once: the piece in flight stops, the
    context is as before it (before, Python saw the signal only when the piece's decode returned), and the
    engine answers the next request."""
    prompt = long_prompt(smollm2, 1100)
    generation = smollm2.generate(Request(prompt, 4, GREEDY))
    context = smollm2._context
    sent = []

    def ctrl_c_during_the_first_piece() -> None:
        while generation._batch._prefilling is None:
            time.sleep(0.001)
        sent.append(time.perf_counter())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    interrupter = threading.Thread(target=ctrl_c_during_the_first_piece)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        generation.run()
    stopped_after = time.perf_counter() - sent[0]
    interrupter.join()
    # a piece of 512 tokens takes seconds on one thread (over 2 s here); stopping it takes a graph node
    assert stopped_after < 0.5 and len(context.cached) < context.n_ubatch
    short = chat_prompt(smollm2, "Name a fruit.")
    assert smollm2.generate(Request(short, 4, GREEDY)).run().completions[0].finish_reason == "length"


def expected_prefix(engine: Engine, request: Request, n: int) -> tuple[int, ...]:
    return engine.generate(request).run().completions[0].tokens[:n]


# on a real model


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> Engine:
    with Engine(smollm2_gguf, n_threads=1, n_ctx=2048, n_seq_max=8) as engine:
        yield engine


def test_cancel_midway_keeps_partial_results_and_the_engine_usable(smollm2: Engine) -> None:
    prompts = [chat_prompt(smollm2, t) for t in ("Name a fruit.", "Write a poem.", "Count to ten.", "Hi")]
    smollm2.logits(prompts[0])  # the reference, and the run after the batch, evaluate only the last prompt token
    reference = smollm2.generate(Request(prompts[0], 12, GREEDY)).run().completions[0].tokens
    batch = smollm2.generate_many([Request(p, 200, Sampling(temperature=1.0, seed=1), n=2) for p in prompts])
    tokens = 0
    for event in batch:
        tokens += isinstance(event, tuple)
        if tokens == 15:
            batch.cancel()
    assert tokens == 15 and batch.finished
    assert batch.results and all(c.finish_reason == "cancelled" for r in batch.results.values() for c in r.completions)
    assert sum(len(c.tokens) for r in batch.results.values() for c in r.completions) == 15
    assert smollm2.generate(Request(prompts[0], 12, GREEDY)).run().completions[0].tokens == reference


def test_an_interrupted_batch_is_cleaned_up_by_the_next_request(smollm2: Engine) -> None:
    prompts = [chat_prompt(smollm2, t) for t in ("Tell a story.", "Explain rain.", "List colours.")]
    smollm2.logits(prompts[0])  # the batch's lead: the reference, and the run after it, evaluate prompts[1] after it
    reference = smollm2.generate(Request(prompts[1], 12, GREEDY)).run().completions[0].tokens
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(smollm2.generate_many([Request(p, 300, Sampling(seed=2), n=3) for p in prompts])):
            if i == 20:
                raise KeyboardInterrupt
    assert smollm2.generate(Request(prompts[1], 12, GREEDY)).run().completions[0].tokens == reference


def test_batched_tokens_are_greedy_for_their_own_prompt_on_a_real_model(smollm2: Engine) -> None:
    """Each batched token is the argmax (within float noise) of teacher-forced logits of its own
    prompt and tokens so far: right prompt, positions and cells for every request."""
    prompts = [chat_prompt(smollm2, t) for t in ("Name a fruit.", "Write a haiku about rain.",
                                                 "What is 2 + 2?", "Describe a cat in one sentence.")]
    results = smollm2.generate_many([Request(p, 24, GREEDY) for p in prompts], max_sequences=3).run()
    for i, prompt in enumerate(prompts):
        ours = results[i].completions[0]
        assert ours.finish_reason == "length" and len(ours.tokens) == 24
        logits = smollm2.logits(prompt + ours.tokens[:-1])[len(prompt) - 1:]
        chosen = logits[np.arange(24), ours.tokens]
        assert (logits.max(axis=1) - chosen).max() < 0.25
