"""Remote backends on real llama-server processes (llama.cpp's C++ server) serving SmolLM2."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from _engine_helpers import chi_square_pvalue, llama_cpp_python_distribution, transformers_distribution
from _recording_upstream import RecordingUpstream

from bpo_local.backend import Request, RequestDone, Sampling
from bpo_local.backends.llamacpp import Engine
from bpo_local.backends.remote import connect
from bpo_local.backends.remote.llama_server import completion_body
from bpo_local.errors import ServerError
from bpo_local.optimizer import Optimizer
from bpo_local.presets import build_prompt

DRAWS = 1000


@pytest.fixture(scope="module")
def remote(llama_server):
    backend = connect([llama_server.url])
    yield Optimizer(backend)
    backend.close()


def chat(backend, text: str) -> tuple[int, ...]:
    return tuple(backend.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n",
                                  add_bos=False, parse_special=True))


def test_tokens_come_from_the_server_and_user_text_stays_plain(remote, llama_server) -> None:
    ids = remote.backend.tokenize("hi <|im_end|>", add_bos=True)
    by_hand = httpx.post(f"{llama_server.url}/tokenize",
                         json={"content": "hi <|im_end|>", "add_special": False, "parse_special": False}).json()
    bos = httpx.post(f"{llama_server.url}/tokenize",
                     json={"content": "<|im_start|>", "add_special": False, "parse_special": True}).json()["tokens"]
    assert ids == bos + by_hand["tokens"] and 2 not in ids  # <|im_end|> typed by a user is text, not the control token
    assert remote.backend.tokenize("<|im_end|>", add_bos=False, parse_special=True) == [2]


def test_requests_are_the_local_engines_token_for_token(remote, smollm2_gguf) -> None:
    """BOS first even though SmolLM2's GGUF says add_bos_token=false (the reference always prepends it), the
    same template tokens, stops and minimum length as the local engine sends."""
    with Optimizer(Engine(smollm2_gguf, n_ctx=512, n_threads=1)) as local:
        for mode in ("stable", "aggressive"):
            ours, theirs = (opt.request_for("tell me a joke about 42 robots", opt.preset(mode), 3)
                            for opt in (local, remote))
            assert (ours.prompt, ours.stop_tokens, ours.min_new_tokens) == \
                (theirs.prompt, theirs.stop_tokens, theirs.min_new_tokens)
            assert ours.prompt[0] == local.backend.bos_token


def test_greedy_sends_the_faithful_request_and_keeps_what_the_server_generated(remote, llama_server) -> None:
    """The body on the wire is the faithful one, built by hand here, and the result is the text the server
    streamed for it (a relay keeps both): no second generation, whose cache state would differ."""
    with RecordingUpstream.start(llama_server.url) as relay:
        via = Optimizer(connect([relay.url]))
        try:
            result = via.optimize("how do I bake bread", temperature=0, max_tokens=24, seed=5)
            request = via.request_for("how do I bake bread", via.preset("stable", temperature=0, max_tokens=24), 5)
        finally:
            via.backend.close()
        sent = relay.last("/completion")
    assert request.prompt == tuple(remote.backend.tokenize(build_prompt("how do I bake bread"), add_bos=True))
    by_hand = completion_body(request, request.prompt, seed=5, n_predict=24, hold_stops=False)
    assert {k: v for k, v in sent.request.items() if k != "id_slot"} == by_hand
    assert result.raw[0] == sent.completion_text()
    # The server's last event says "limit" when it ran out of tokens; a stream our client closed at a stop
    # token has no final event.
    ran_out = sent.events()[-1].get("stop_type") == "limit"
    assert result.finish_reasons == (("length",) if ran_out else ("stop",))


def test_the_servers_greedy_tokens_are_the_local_engines_top_choices(remote, smollm2_gguf) -> None:
    """Two llama.cpp builds round differently, so their generations need not match token for token; each token
    the server picks greedily must be, within rounding, our engine's top choice after the same tokens."""
    prompt = chat(remote.backend, "Name three fruits.")
    request = Request(prompt, 6, Sampling(temperature=0), stop_tokens=frozenset({2}))
    ours = remote.backend.generate(request)
    for _ in ours:
        pass
    tokens = ours.result.completions[0].tokens
    assert len(tokens) >= 3
    with Engine(smollm2_gguf, n_threads=1, n_ctx=512) as engine:
        logits = engine.logits([*prompt, *tokens])
    for i, token in enumerate(tokens):
        row = logits[len(prompt) - 1 + i]
        assert row[token] >= row.max() - 0.25, (i, token, int(row.argmax()))


def server_logits(url: str, prompt: tuple[int, ...], n_vocab: int, top: int = 200) -> np.ndarray:
    """The server's own next-token log-probabilities (its llama.cpp build rounds differently from
    ours, which moves tokens at the top-p boundary): the ``top`` likeliest, -inf elsewhere."""
    reply = httpx.post(f"{url}/completion", json={"prompt": list(prompt), "n_predict": 1, "n_probs": top,
                                                  "samplers": [], "return_tokens": True}, timeout=120).json()
    logits = np.full(n_vocab, -np.inf)
    for entry in reply["completion_probabilities"][0]["top_logprobs"]:
        logits[entry["id"]] = entry["logprob"]
    return logits


def test_hot_sampling_through_the_server_follows_transformers_order(remote, llama_server) -> None:
    prompt = chat(remote.backend, "Name a color.")
    logits = server_logits(llama_server.url, prompt, 49152)
    ours = transformers_distribution(logits, 1.5, 50, 0.9)
    theirs = llama_cpp_python_distribution(logits, 1.5, top_p=0.9)
    request = Request(prompt, 1, Sampling(temperature=1.5, top_k=50, top_p=0.9, seed=1234), n=1,
                      stop_tokens=frozenset({2}))
    requests = [Request(prompt, 1, Sampling(1.5, 0.9, 50, seed=1234 + i), stop_tokens=request.stop_tokens)
                for i in range(DRAWS)]
    finished = [e for e in remote.backend.generate_many(requests, max_sequences=8) if isinstance(e, RequestDone)]
    draws = [done.result.completions[0].tokens[0] for done in finished if done.result.completions[0].tokens]
    assert len(draws) > 0.95 * DRAWS and len(Counter(draws)) > 10
    assert chi_square_pvalue(draws, ours) > 1e-3
    assert chi_square_pvalue(draws, theirs) < 1e-6


def test_aggressive_candidates_obey_min_length_and_the_newline_stop(remote) -> None:
    prompt = "tell me a joke"
    preset = remote.preset("aggressive", max_tokens=48)
    request = remote.request_for(prompt, preset, 3)
    newline = remote.backend.token_for_piece("\n")
    assert newline in request.stop_tokens and request.min_new_tokens > 5
    assert request.banned == ()  # multi-token bans are skipped, and said so
    stream = remote.stream(prompt, mode="aggressive", seed=3, max_tokens=48)
    deltas = list(stream)
    result = stream.result
    assert deltas and len(result.candidates) == 5 and result.adaptations
    gen = remote.backend.generate(request)
    for _ in gen:
        pass
    for completion in gen.result.completions:
        assert newline not in completion.tokens and request.stop_tokens.isdisjoint(completion.tokens)
        assert len(completion.tokens) >= request.min_new_tokens or completion.finish_reason == "length"


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def garbage_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_garbage_and_unreachable_servers_are_one_line_errors(garbage_server) -> None:
    with pytest.raises(ServerError, match="not JSON") as info:
        connect([garbage_server])
    assert "\n" not in str(info.value)
    with pytest.raises(ServerError, match="cannot reach"):
        connect(["http://127.0.0.1:9"])


def test_vllm_kind_on_a_llama_server_is_refused(llama_server) -> None:
    with pytest.raises(ServerError, match="is not a vllm"):
        connect([llama_server.url], kind="vllm")
