"""`bpo-local serve --upstream`: BPO rewrites the last user turn in front of a real llama-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote

import httpx
import openai
import pytest
from _llama_server import free_port
from _recording_upstream import RecordingUpstream
from _serve_helpers import BpoServer

from bpo_local import sse

PROMPT = "tell me a joke"
GREEDY = {"temperature": 0, "seed": 0, "max_tokens": 24}


@pytest.fixture(scope="module")
def upstream(llama_server):
    """The real llama-server behind a relay that keeps what the proxy sent and what the server answered."""
    with RecordingUpstream.start(llama_server.url) as relay:
        yield relay


@pytest.fixture(scope="module")
def proxy(smollm2_gguf: Path, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory):
    """BPO (SmolLM2 stands in) in front of llama-server (SmolLM2 as the target); seed 1 rewrites PROMPT."""
    with BpoServer.start(smollm2_gguf, "--ctx", "1024", "--seed", "1", "--max-tokens", "64",
                         "--upstream", f"{upstream.url}/v1",
                         home=tmp_path_factory.mktemp("proxy-home")) as server:
        yield server


@pytest.fixture(scope="module")
def client(proxy: BpoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)


def forwarded(upstream: RecordingUpstream, messages: list[dict]) -> str:
    """The real server's answer to the chat request the proxy sent, which carried exactly ``messages``."""
    exchange = upstream.last("/v1/chat/completions")
    assert exchange.request["messages"] == messages and exchange.status == 200
    return exchange.answer_text()


def ask(client: openai.OpenAI, mode: str, **kw):
    return client.chat.completions.with_raw_response.create(
        model="target", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        extra_headers={"X-BPO-Mode": mode}, **GREEDY, **kw)


def test_the_upstream_answers_the_rewritten_prompt(client: openai.OpenAI, proxy: BpoServer,
                                                  upstream: RecordingUpstream) -> None:
    raw = ask(client, "stable")
    reply = raw.parse()
    bpo = reply.model_extra["bpo"]
    assert bpo["status"] == "optimized" and bpo["original_prompt"] == PROMPT and bpo["mode"] == "stable"
    optimized = bpo["optimized_prompt"]
    assert optimized and optimized != PROMPT
    assert raw.headers["x-bpo-status"] == "optimized" and unquote(raw.headers["x-bpo-optimized-prompt"]) == optimized
    expected = forwarded(upstream, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": optimized}])
    assert reply.choices[0].message.content == expected
    entry = proxy.logged(PROMPT)[0]
    assert entry["prompt"] == PROMPT and entry["output"] == optimized and entry["params"]["upstream_model"] == "target"


def test_mode_off_forwards_the_original(client: openai.OpenAI, upstream: RecordingUpstream) -> None:
    raw = ask(client, "off")
    assert raw.headers["x-bpo-status"] == "off" and raw.parse().model_extra["bpo"]["optimized_prompt"] is None
    expected = forwarded(upstream, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}])
    assert raw.parse().choices[0].message.content == expected


def test_aggressive_forwards_the_first_candidate(client: openai.OpenAI) -> None:
    bpo = ask(client, "aggressive").parse().model_extra["bpo"]
    assert bpo["mode"] == "aggressive" and bpo["status"] in ("optimized", "original")


def test_streaming_passes_the_upstreams_chunks_through(client: openai.OpenAI, upstream: RecordingUpstream) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="target", messages=[{"role": "user", "content": PROMPT}], stream=True,
            extra_headers={"X-BPO-Mode": "stable"}, **GREEDY) as response:
        optimized = unquote(response.headers["x-bpo-optimized-prompt"])
        chunks = list(response.parse())
    assert len(chunks) > 3
    bpo = chunks[0].model_extra["bpo"]  # the rewrite rides on the first chunk, as on a whole answer
    assert bpo["status"] == "optimized" and bpo["optimized_prompt"] == optimized and bpo["original_prompt"] == PROMPT
    assert not any("bpo" in c.model_extra for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == forwarded(upstream, [{"role": "user", "content": optimized}])


def test_pas_forwards_the_prompt_and_its_supplement_and_is_never_taken_for_bpo(
        client: openai.OpenAI, proxy: BpoServer, upstream: RecordingUpstream) -> None:
    raw = ask(client, "pas")
    bpo = raw.parse().model_extra["bpo"]
    assert bpo["mode"] == "pas" and raw.headers["x-bpo-mode"] == "pas" and bpo["status"] == "optimized", bpo
    appended = bpo["optimized_prompt"]
    assert appended.startswith(PROMPT + "\n") and appended.strip() != PROMPT  # the original, "\n", a supplement
    expected = forwarded(upstream, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": appended}])
    assert raw.parse().choices[0].message.content == expected
    ollama = httpx.post(f"{proxy.url}/api/chat", headers={"X-BPO-Mode": "pas"},
                        json={"model": "target", "messages": [{"role": "user", "content": PROMPT}], "stream": False,
                              "options": {"temperature": 0, "seed": 0, "num_predict": 8}}, timeout=120).json()
    assert ollama["bpo"]["mode"] == "pas" and ollama["bpo"]["optimized_prompt"].startswith(PROMPT + "\n")
    assert upstream.last("/v1/chat/completions").request["messages"][-1]["content"] == ollama["bpo"]["optimized_prompt"]
    stable = ask(client, "stable").parse().model_extra["bpo"]  # the same turn: the store keeps presets apart
    assert stable["mode"] == "stable" and stable["optimized_prompt"] != appended


def test_models_are_the_upstreams(client: openai.OpenAI, llama_server) -> None:
    ours = [m.id for m in client.models.list()]
    theirs = httpx.get(f"{llama_server.url}/v1/models").json()
    assert ours == [m["id"] for m in theirs["data"]]


def test_a_failed_rewrite_forwards_the_original_and_says_why(client: openai.OpenAI) -> None:
    long = "please summarise: " + "word " * 1100  # over BPO's 1024-token context, within the upstream's
    raw = client.chat.completions.with_raw_response.create(
        model="target", messages=[{"role": "user", "content": long}], max_tokens=4)
    bpo = raw.parse().model_extra["bpo"]
    assert bpo["status"] == "original" and bpo["optimized_prompt"] is None
    assert "1024" in bpo["reason"] and raw.headers["x-bpo-status"] == "original"


def test_an_upstream_error_keeps_its_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="target", messages=[{"role": "user", "content": PROMPT}],
                                       extra_headers={"X-BPO-Mode": "off"}, n=3)
    assert 400 <= caught.value.status_code < 600


def test_bad_mode_header_is_400(proxy: BpoServer) -> None:
    response = httpx.post(f"{proxy.base_url}/chat/completions", headers={"X-BPO-Mode": "wild"},
                          json={"messages": [{"role": "user", "content": "hi"}]})
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and "X-BPO-Mode 'wild'" in message and "pas, mepo" in message


def test_an_unreachable_upstream_is_502(smollm2_gguf: Path, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, "--ctx", "512", "--upstream", f"http://127.0.0.1:{free_port()}/v1",
                         home=tmp_path) as server:
        bad = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            bad.chat.completions.create(model="t", messages=[{"role": "user", "content": "hi"}],
                                        extra_headers={"X-BPO-Mode": "off"})
        assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_unreachable"
        with pytest.raises(openai.APIStatusError) as caught:
            bad.models.list()
        assert caught.value.status_code == 502


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_the_record_joins_the_first_json_event_however_the_stream_is_cut(size: int) -> None:
    stream = b': ping\r\n\r\ndata: {"id": "a", "choices": []}\n\ndata: {"id": "b"}\n\ndata: [DONE]\n\n'
    pieces = [stream[i:i + size] for i in range(0, len(stream), size)]

    async def chunks():
        for piece in pieces:
            yield piece

    async def collect() -> bytes:
        return b"".join([c async for c in sse.with_first_json(chunks(), lambda first: first.update(bpo={"status": "off"}))])

    assert asyncio.run(collect()) == (b': ping\r\n\r\ndata: {"id": "a", "choices": [], "bpo": {"status": "off"}}\n\n'
                                      b'data: {"id": "b"}\n\ndata: [DONE]\n\n')
