"""`bpo-local serve` with BPO itself as the model, driven by the official openai client and httpx.

SmolLM2-135M stands in for BPO (the optimizer does not care what the GGUF learned).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import openai
import pytest
from _cli_helpers import assert_one_line_error, model_args
from _llama_server import free_port
from _recording_upstream import RecordingUpstream
from _serve_helpers import BpoServer

from bpo_local.presets import AGGRESSIVE, MEPO, PAS, STABLE, postprocess
from bpo_local.serve import bpo_answer

PROMPT = "tell me a joke"
SETTINGS = {"seed": 1, "max_tokens": 40}


@pytest.fixture(scope="module")
def server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    with BpoServer.start(smollm2_gguf, "--ctx", "2048", "--max-tokens", "512",
                         home=tmp_path_factory.mktemp("serve-home")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: BpoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def cli_prints(run_cli, gguf: Path, *args: str) -> str:
    """What `bpo-local optimize` prints for the same settings (same model options as the server)."""
    proc = run_cli("optimize", *args, *model_args(gguf)[:4], "--ctx", "2048", "--no-log")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.removesuffix("\n")


def test_health_and_models(server: BpoServer, client: openai.OpenAI, smollm2_gguf: Path) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert [m.id for m in client.models.list()] == [smollm2_gguf.name]


@pytest.fixture
def fresh(smollm2_gguf: Path, tmp_path: Path):
    """A server that has answered nothing yet: its first answer starts from an empty cache, as a fresh
    `bpo-local optimize` process does, so the two are equal by construction (same model options)."""
    with BpoServer.start(smollm2_gguf, "--ctx", "2048", "--max-tokens", "512", home=tmp_path / "fresh") as server:
        yield server


def test_chat_answers_what_optimize_prints(fresh: BpoServer, run_cli, smollm2_gguf: Path) -> None:
    client = openai.OpenAI(base_url=fresh.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="bpo", messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": PROMPT}], **SETTINGS)
    expected = cli_prints(run_cli, smollm2_gguf, PROMPT, "--seed", "1", "--max-tokens", "40")
    assert expected and reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant" and reply.model == smollm2_gguf.name
    assert reply.usage.completion_tokens > 0
    assert reply.model_extra["bpo"]["prompt"] == PROMPT


def test_aggressive_chat_answers_the_candidates_as_optimize_prints_them(fresh: BpoServer, run_cli,
                                                                        smollm2_gguf: Path) -> None:
    client = openai.OpenAI(base_url=fresh.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": PROMPT}],
                                           extra_body={"mode": "aggressive"}, **SETTINGS)
    expected = cli_prints(run_cli, smollm2_gguf, PROMPT, "--mode", "aggressive", "--seed", "1", "--max-tokens", "40")
    assert reply.choices[0].message.content == expected
    assert len(reply.model_extra["bpo"]["candidates"]) == 5


def twice_after_a_first(ask):
    """``ask()`` three times; the last two. The engine keeps the last prompt cached, so the second and third
    requests start from the same cache state (the first may not: it follows whatever ran before)."""
    ask()
    return ask(), ask()


@pytest.mark.parametrize("mode", ["stable", "aggressive"])
def test_a_streamed_chat_adds_up_to_the_whole_answer(client: openai.OpenAI, mode: str) -> None:
    kwargs = dict(model="bpo", messages=[{"role": "user", "content": "tell me a joke"}], extra_body={"mode": mode},
                  seed=4, max_tokens=60)
    streams = iter([False, False, True])
    reply, chunks = twice_after_a_first(
        lambda: client.chat.completions.create(**kwargs, **({"stream": True} if next(streams) else {})))
    whole, chunks = reply.choices[0], list(chunks)
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].model_extra["bpo"]["candidates"] == reply.model_extra["bpo"]["candidates"]  # on the last chunk


def test_completions_stream_and_whole(client: openai.OpenAI) -> None:
    streams = iter([False, False, True])
    whole, streamed = twice_after_a_first(
        lambda: client.completions.create(model="bpo", prompt=PROMPT, stream=next(streams), **SETTINGS))
    whole = whole.choices[0].text
    assert whole and "".join(c.choices[0].text for c in streamed) == whole


def test_optimize_route_returns_what_optimize_json_prints(fresh: BpoServer, run_cli, smollm2_gguf: Path) -> None:
    body = {"prompt": PROMPT, "mode": "stable", "n": 2, "temperature": 0.8, "top_p": 0.95, "top_k": 40,
            "max_tokens": 30, "seed": 11}
    got = httpx.post(f"{fresh.url}/v1/optimize", json=body, timeout=120).json()
    expected = json.loads(cli_prints(run_cli, smollm2_gguf, PROMPT, "--json", "-n", "2", "--temperature", "0.8",
                                     "--top-p", "0.95", "--top-k", "40", "--max-tokens", "30", "--seed", "11"))
    for record in (got, expected):
        del record["timings"]
    assert got == expected
    assert got["params"] == {"n": 2, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "max_tokens": 30, "seed": 11}


def test_optimize_many_prompts_answers_each_in_order(server: BpoServer) -> None:
    prompts = ["name a fruit", "", "write a haiku"]
    results = httpx.post(f"{server.url}/v1/optimize", json={"prompts": prompts, **SETTINGS}, timeout=120).json()
    answers = results["results"]
    assert [a.get("prompt") for a in answers] == ["name a fruit", None, "write a haiku"]
    assert answers[1]["error"]["code"] == "invalid_value" and "empty" in answers[1]["error"]["message"]
    solo = httpx.post(f"{server.url}/v1/optimize", json={"prompt": "write a haiku", **SETTINGS}, timeout=120).json()
    assert answers[2]["params"] == solo["params"] and answers[2]["prompt"] == solo["prompt"]


def test_every_run_is_in_the_run_log(server: BpoServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "log me please"}], **SETTINGS)
    entries = server.logged("log me please")
    assert entries and entries[0]["prompt"] == "log me please" and entries[0]["params"]["seed"] == 1


def test_a_client_that_leaves_during_its_long_prompt_stops_its_evaluation(server: BpoServer) -> None:
    """A client that gives up while its long prompt is evaluated stops the evaluation within a micro-batch (before,
    the engine evaluated the whole prompt first while everyone queued behind it waited); the part evaluated stays
    cached, so the same prompt sent again continues from it."""
    text = " ".join(["The report lists rainfall and river levels by region."] * 60)  # about 700 tokens
    body = {"model": "bpo", "messages": [{"role": "user", "content": text}], "max_tokens": 2, "seed": 1}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=httpx.Timeout(60, read=0.3))
    again = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    assert again.status_code == 200, again.text
    entries = server.logged("river levels by region")
    left, finished = sorted((e for e in entries if e["prompt"] == text), key=lambda e: e["id"])
    assert left["finish_reasons"] == ["cancelled"] and finished["finish_reasons"] == ["length"]
    timings = finished["timings"]  # the client left within its first micro-batch (512 tokens), or right after it
    assert timings["prompt_tokens"] > 600 and timings["cached_prompt_tokens"] < timings["prompt_tokens"] - 64


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    return body["error"]


@pytest.mark.parametrize(("body", "status", "code", "words"), [
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    (b"[1, 2]", 400, "invalid_json", "object"),
    (b"{}", 400, "missing_messages", "messages"),
    (b'{"messages": [{"role": "assistant", "content": "hi"}]}', 400, "invalid_value", "no user message"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400, "invalid_value", "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 2}', 400, "invalid_value", "top_p"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}', 400, "invalid_value", "limit of 512"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "mode": "wild"}', 400, "invalid_value",
     "unknown preset 'wild' in \"mode\"; choose from: stable, aggressive, pas, mepo"),
    (b'{"messages": [{"role": "user", "content": "  "}]}', 400, "invalid_value", "empty"),
])
def test_bad_chat_requests_get_openai_style_errors(server: BpoServer, body: bytes, status: int, code: str,
                                                   words: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=60)
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code and words in error["message"], error


def test_unknown_routes_and_methods(server: BpoServer) -> None:
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = httpx.get(f"{server.url}/v1/chat/completions")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"


def test_a_prompt_over_the_context_is_400_naming_both_sizes(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "word " * 2500}],
                                           stream=stream)
        error = caught.value.body
        assert error["code"] == "context_length_exceeded"
        assert "2048" in error["message"] and "prompt is 25" in error["message"], error
        assert "shorten the prompt" in error["message"] and "--" not in error["message"], error  # no CLI flag


def test_a_body_over_the_limit_is_413(server: BpoServer) -> None:
    response = httpx.post(f"{server.url}/v1/optimize", content=b'{"prompt": "' + b"x" * (1 << 20) + b'"}')
    assert response.status_code == 413 and "1048576" in error_of(response)["message"]


def test_serve_refuses_a_network_address_without_a_key(run_cli, smollm2_gguf: Path) -> None:
    proc = run_cli("serve", "--model", str(smollm2_gguf), "--host", "0.0.0.0", env={"BPO_LOCAL_API_KEY": ""})
    assert_one_line_error(proc, 2, "0.0.0.0", "--api-key")


def test_serve_on_a_port_in_use_is_one_line(run_cli, server: BpoServer, smollm2_gguf: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    proc = run_cli("serve", "--model", str(smollm2_gguf), "--port", port)
    assert_one_line_error(proc, 1, f"127.0.0.1:{port}", "--port")


def test_an_append_preset_answers_prompt_separator_and_supplement_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="bpo", messages=[{"role": "user", "content": PROMPT}],
                                           extra_body={"mode": "pas"}, **SETTINGS)
    bpo = whole.model_extra["bpo"]
    assert bpo["mode"] == "pas" and whole.choices[0].message.content == bpo["optimized_prompt"]
    assert bpo["optimized_prompt"].startswith(PROMPT + "\n") and len(bpo["optimized_prompt"]) > len(PROMPT) + 1
    with client.chat.completions.with_streaming_response.create(
            model="bpo", messages=[{"role": "user", "content": PROMPT}], stream=True, extra_body={"mode": "pas"},
            **SETTINGS) as response:
        chunks = list(response.parse())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    record = chunks[-1].model_extra["bpo"]  # this very request's result: the pieces must add up to it
    assert record["mode"] == "pas" and "".join(pieces) == record["optimized_prompt"]
    assert pieces[0] == PROMPT and pieces[1].startswith("\n") and len(pieces) > 2  # the prompt first, then as it settles


def test_a_users_toml_preset_added_while_serving_is_picked_by_name(server: BpoServer) -> None:
    (server.home / "presets").mkdir(exist_ok=True)
    (server.home / "presets" / "mine.toml").write_text(
        'template = "Add one detail.\\n{prompt}\\nDetail:"\nwrap = "chat"\nuse = "append"\nseparator = " -- "\n'
        'temperature = 0\nmax_new_tokens = 7\n', encoding="utf-8")
    result = httpx.post(f"{server.base_url}/optimize", json={"prompt": PROMPT, "mode": "mine"}, timeout=60).json()
    assert result["mode"] == "mine" and result["params"]["max_tokens"] == 7, result
    assert result["optimized_prompt"] == PROMPT or result["optimized_prompt"].startswith(PROMPT + " -- ")


@pytest.mark.parametrize("preset", [STABLE, AGGRESSIVE, PAS, MEPO], ids=lambda p: p.name)
def test_streamed_text_is_always_a_prefix_of_the_final_output(preset) -> None:
    """What a stream sends (``settled``) is never taken back: markers, deleted texts and whitespace that
    arrive later are held back, whatever the pieces."""
    pieces = ["a", " ", "\n", "[/INST]", "[KE", "[INS", "[PRO", "Golden", " Prompt:", "Golden Prompt:", "G", "Go"]
    draw = random.Random(0)
    for _ in range(3000):
        raw = "".join(draw.choice(pieces) for _ in range(draw.randint(0, 10)))
        final = postprocess(raw, preset)
        for end in range(len(raw) + 1):
            assert final.startswith(bpo_answer.settled(raw[:end], preset)), (raw, end)


def test_serve_with_an_unknown_preset_is_a_usage_error(run_cli, smollm2_gguf: Path) -> None:
    proc = run_cli("serve", "--model", str(smollm2_gguf), "--port", "0", "--preset", "nope")
    assert_one_line_error(proc, 2, "unknown preset 'nope'", "pas, mepo")


def test_serve_with_a_bad_flag_is_a_usage_error(run_cli) -> None:
    proc = run_cli("serve", "--port", "99999")
    assert proc.returncode == 2 and "not a port" in proc.stderr


# auth


@pytest.fixture(scope="module")
def locked(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    with BpoServer.start(smollm2_gguf, "--ctx", "1024", "--host", "127.0.0.1", home=tmp_path_factory.mktemp("locked"),
                         env={"BPO_LOCAL_API_KEY": "s3cret-key"}) as server:
        yield server


def test_with_a_key_every_route_but_health_needs_it(locked: BpoServer) -> None:
    assert httpx.get(f"{locked.url}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"}):
        response = httpx.get(f"{locked.url}/v1/models", headers=headers)
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
        assert httpx.get(f"{locked.url}/v1/nothing", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=locked.base_url, api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=locked.base_url, api_key="s3cret-key", max_retries=0)
    assert good.models.list().data
    reply = good.chat.completions.create(model="bpo", messages=[{"role": "user", "content": "hi"}], **SETTINGS)
    assert reply.choices[0].message.role == "assistant"
    assert "s3cret-key" not in locked.log.read_text()


def test_a_network_address_with_a_key_serves(smollm2_gguf: Path, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, "--ctx", "512", "--host", "0.0.0.0", "--api-key", "k", home=tmp_path) as srv:
        port = srv.url.rsplit(":", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200


def test_free_port_helper_is_free() -> None:
    assert 0 < free_port() < 65536


def test_serve_in_front_of_a_remote_bpo_answers_what_optimize_prints(llama_server, run_cli, tmp_path: Path) -> None:
    """``serve --server URL``: BPO runs on a llama-server; a chat client (whole or streamed) gets the text the server
    generated for exactly the request ``optimize --server`` sends for the same greedy settings. Each answer is
    compared with what the server streamed for that very request (a relay keeps it): two generations on a
    server whose slots and prompt cache other requests have used need not match."""
    ask = {"model": "bpo", "messages": [{"role": "user", "content": "how do I bake bread"}],
           "temperature": 0, "max_tokens": 24}
    with RecordingUpstream.start(llama_server.url) as relay:
        with BpoServer.start(None, "--server", relay.url, home=tmp_path / "home") as remote:
            client = openai.OpenAI(base_url=remote.base_url, api_key="unused")
            answer = client.chat.completions.create(**ask).choices[0].message.content
            whole = relay.last("/completion")
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                               client.chat.completions.create(**ask, stream=True) if chunk.choices)
            in_stream = relay.last("/completion")
        printed = run_cli("optimize", "--server", relay.url, "--temperature", "0", "--max-tokens", "24",
                          "--no-log", "how do I bake bread")
        assert printed.returncode == 0, printed.stderr
        by_cli = relay.last("/completion")
    bodies = [{k: v for k, v in e.request.items() if k not in ("id_slot", "seed")}  # greedy: the seed plays no part
              for e in (whole, in_stream, by_cli)]
    assert bodies[0] == bodies[1] == bodies[2] and bodies[0]["temperature"] == 0 and bodies[0]["n_predict"] == 24
    assert (answer, streamed, printed.stdout.rstrip("\n")) == tuple(postprocess(e.completion_text(), STABLE)
                                                                    for e in (whole, in_stream, by_cli))


def test_bpo_answers_as_an_ollama_model(server: BpoServer, smollm2_gguf: Path) -> None:
    import ollama

    client = ollama.Client(host=server.url)
    ask = [{"role": "user", "content": PROMPT}]
    options = {"seed": 1, "num_predict": 40}
    whole = client.chat(model="bpo", messages=ask, stream=False, options=options)
    assert whole.done and whole.model == smollm2_gguf.name and whole.eval_count > 0 and whole.message.content
    raw = httpx.post(f"{server.url}/api/chat", json={"model": "bpo", "messages": ask, "options": options}, timeout=120)
    lines = [json.loads(line) for line in raw.text.splitlines()]  # NDJSON, streamed by default
    assert raw.headers["content-type"].startswith("application/x-ndjson") and lines[-1]["done"]
    assert "".join(line["message"]["content"] for line in lines) == lines[-1]["bpo"]["optimized_prompt"]
    generated = httpx.post(f"{server.url}/api/generate", json={"model": "bpo", "prompt": PROMPT, "stream": False,
                                                               "options": options}, timeout=120).json()
    assert generated["done"] and generated["response"] == generated["bpo"]["optimized_prompt"]
    assert client.generate(model="bpo", prompt=PROMPT, options=options).done
    assert [m.model for m in client.list().models] == [smollm2_gguf.name]
    bad = httpx.post(f"{server.url}/api/chat", json={"model": "bpo", "messages": ask, "stream": False,
                                                     "options": {"num_predict": "40"}}, timeout=30)
    assert bad.status_code == 400 and "'40'" in bad.json()["error"]  # checked, not a crash; Ollama's error shape
