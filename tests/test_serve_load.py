"""Many clients at once, a client that leaves, a full queue and SIGTERM, on a tiny F32 Llama (BPO's
tokenizer, random weights): batched greedy decoding on it is exact, and it rarely stops early."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from _serve_helpers import BpoServer

GREEDY = {"temperature": 0, "seed": 5}


@pytest.fixture(scope="module")
def server(tiny_f32: Path, tmp_path_factory: pytest.TempPathFactory):
    with BpoServer.start(tiny_f32, "--ctx", "4096", "--parallel", "8", "--queue", "64",
                         home=tmp_path_factory.mktemp("load-home")) as server:
        yield server


def optimize(url: str, prompt: str, max_tokens: int, client: httpx.Client | None = None) -> dict:
    response = (client or httpx).post(f"{url}/v1/optimize", json={"prompt": prompt, "max_tokens": max_tokens,
                                                                   **GREEDY}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_32_concurrent_clients_each_get_their_own_answer(server: BpoServer) -> None:
    prompts = [f"question {i}: how do I {verb} a {thing}?" for i, (verb, thing) in
               enumerate((v, t) for v in ("fix", "paint", "sell", "draw") for t in ("bike", "house", "boat", "cake",
                                                                                     "song", "car", "chair", "map"))]
    assert len(prompts) == 32
    alone = {p: optimize(server.url, p, 16)["optimized_prompt"] for p in prompts}
    assert len(set(alone.values())) == 32  # prompt-dependent answers: a mix-up would show

    async def all_at_once() -> list[dict]:
        async with httpx.AsyncClient(timeout=300) as client:
            replies = await asyncio.gather(*(client.post(f"{server.url}/v1/optimize",
                                                         json={"prompt": p, "max_tokens": 16, **GREEDY})
                                             for p in prompts))
        return [r.json() for r in replies]

    together = asyncio.run(all_at_once())
    assert [r["prompt"] for r in together] == prompts
    assert {r["prompt"]: r["optimized_prompt"] for r in together} == alone


def test_a_client_that_leaves_mid_stream_cancels_only_its_own_generation(server: BpoServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    other: dict = {}
    worker = threading.Thread(target=lambda: other.update(optimize(server.url, "the other client", 300)))
    stream = client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "I will leave"}],
                                            stream=True, max_tokens=1000, **GREEDY)
    worker.start()
    received = 0
    for chunk in stream:
        received += bool(chunk.choices[0].delta.content)
        if received == 5:
            break
    stream.close()
    worker.join(300)
    assert other["finish_reasons"] == ["length"] and other["timings"]["generated_tokens"] == 300
    assert other["optimized_prompt"] == optimize(server.url, "the other client", 300)["optimized_prompt"]
    left = server.logged("leave")
    assert left[0]["interrupted"] and left[0]["finish_reasons"] == ["cancelled"]
    assert left[0]["timings"]["generated_tokens"] < 1000


def test_a_full_queue_answers_429_with_retry_after(tiny_f32: Path, tmp_path: Path) -> None:
    with BpoServer.start(tiny_f32, "--ctx", "2048", "--parallel", "1", "--queue", "1", home=tmp_path) as server:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=300) as client:
                return await asyncio.gather(*(client.post(f"{server.url}/v1/optimize",
                                                          json={"prompt": f"p{i}", "max_tokens": 400, **GREEDY})
                                              for i in range(5)))

        replies = asyncio.run(burst())
        codes = sorted(r.status_code for r in replies)
        assert codes.count(429) >= 3 and set(codes) == {200, 429}, codes
        busy = next(r for r in replies if r.status_code == 429)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tiny_f32: Path, tmp_path: Path) -> None:
    server = BpoServer.start(tiny_f32, "--ctx", "2048", home=tmp_path)
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "finish me"}],
                                                stream=True, max_tokens=200, **GREEDY)
        chunks = [next(stream), next(stream)]
        server.process.send_signal(15)
        chunks += list(stream)
        assert chunks[-1].choices[0].finish_reason == "length"
        assert server.process.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health")
    finally:
        server.stop()


def test_sigterm_past_the_grace_cancels_what_still_runs_and_answers_it(smollm2_gguf: Path, tmp_path: Path) -> None:
    server = BpoServer.start(smollm2_gguf, "--ctx", "2048", "--grace", "1", home=tmp_path)
    try:
        endless = {"temperature": 3, "top_k": 0, "top_p": 1, "seed": 1, "max_tokens": 1000}  # near-uniform: no EOS
        waiting = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
        waiting.request("POST", "/v1/optimize", json.dumps({"prompt": "keep going", **endless}),
                        {"Content-Type": "application/json"})  # sent now, its answer read after the SIGTERM
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "go on"}],
                                                stream=True, max_tokens=endless.pop("max_tokens"),
                                                extra_body=endless)
        chunks = [next(stream), next(stream)]
        stopped_at = time.monotonic()
        server.process.send_signal(15)
        chunks += list(stream)
        whole = json.loads(waiting.getresponse().read())
        assert time.monotonic() - stopped_at < 10  # the grace, then the cancel: well before 1000 tokens
        record = chunks[-1].model_extra["bpo"]
        assert record["finish_reasons"] == ["cancelled"] and 0 < record["timings"]["generated_tokens"] < 1000
        assert whole["finish_reasons"] == ["cancelled"] and 0 < whole["timings"]["generated_tokens"] < 1000
        assert server.process.wait(30) == 0
    finally:
        server.stop()
