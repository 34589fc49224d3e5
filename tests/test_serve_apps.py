"""The proxy inside chat apps: apps' own requests (Open WebUI's title, tags and follow-ups; LibreChat's title)
go upstream byte for byte with no BPO generation, while the person's turn, sent as Open WebUI sends it, is
rewritten; the person sees the rewrite (--show-rewrite) and can skip BPO for one message; a slow rewrite gives
way to the original in time; errors and a shutdown answer in each API's own shape.

BPO is SmolLM2 (seed 1, aggressive); the upstream is a real llama-server behind a relay that keeps what it got.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import anthropic
import httpx
import ollama
import openai
import pytest
from _app_requests import (
    CLAUDE_CODE_OPENED,
    CLAUDE_CODE_SYSTEM,
    CLAUDE_CODE_TITLE,
    OPEN_WEBUI_FOLLOW_UP,
    OPEN_WEBUI_TAGS,
    OPEN_WEBUI_TITLE,
    claude_code_turn,
    codex_input,
    librechat_title,
    open_webui_rag,
    open_webui_task,
    open_webui_turn,
    with_code_interpreter,
)
from _llama_server import free_port
from _recording_upstream import RecordingUpstream
from _serve_helpers import BpoServer

BPO = ("--ctx", "1024", "--seed", "1", "--max-tokens", "48", "--mode", "aggressive")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def proxy(smollm2_gguf: Path, relay: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory):
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1",
                         home=tmp_path_factory.mktemp("apps-home")) as server:
        yield server


def generations(proxy: BpoServer, prompt: str) -> int:
    return sum(1 for entry in proxy.logged(prompt, timeout=2) if entry["prompt"] == prompt)


def streamed_text(response: httpx.Response) -> str:
    events = [json.loads(line[5:]) for line in response.text.splitlines()
              if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices"))


def test_open_webui_chat_rewrites_the_person_and_passes_its_tasks(proxy: BpoServer, relay: RecordingUpstream) -> None:
    question = "how do vaccines work"
    turn = httpx.post(f"{proxy.base_url}/chat/completions", content=open_webui_turn([{"role": "user",
                                                                                       "content": question}]),
                      headers=JSON, timeout=120)
    assert turn.status_code == 200 and turn.headers["x-bpo-turn"] == "rewritten"
    forwarded = relay.last("/v1/chat/completions").request
    assert forwarded["messages"][0]["content"] != question and forwarded["tools"]
    answer = streamed_text(turn) or "Vaccines train the immune system."
    chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    for template in (OPEN_WEBUI_TITLE, OPEN_WEBUI_TAGS, OPEN_WEBUI_FOLLOW_UP):
        sent = open_webui_task(template, chat, max_tokens=64)  # the model's Max Tokens set: SmolLM2 may ramble
        reply = httpx.post(f"{proxy.base_url}/chat/completions", content=sent, headers=JSON, timeout=120)
        assert reply.status_code == 200 and reply.json()["bpo"]["turn"] == "app task", reply.text
        assert reply.json()["bpo"]["reason"].startswith("Open WebUI")
        exchange = relay.last("/v1/chat/completions")
        assert exchange.body == sent  # byte for byte
        assert reply.json()["choices"][0]["message"]["content"] == exchange.answer_text()
    marked = httpx.post(f"{proxy.base_url}/chat/completions", headers={**JSON, "X-OpenWebUI-Task": "query_generation"},
                        content=json.dumps({"model": "target", "max_tokens": 8, "stream": False,
                                            "messages": [{"role": "user", "content": "weather in Paris?"}]}),
                        timeout=120).json()["bpo"]
    assert marked["turn"] == "app task" and "query_generation" in marked["reason"]
    title = librechat_title(question, answer)
    reply = httpx.post(f"{proxy.base_url}/chat/completions", content=title, headers=JSON, timeout=120).json()
    assert reply["bpo"]["turn"] == "app task" and relay.last("/v1/chat/completions").body == title
    assert generations(proxy, question) == 1 and len(proxy.logged(timeout=2)) == 1  # the person's turn alone


def test_open_webui_rag_and_code_interpreter_leave_the_apps_text_around_the_rewrite(proxy: BpoServer,
                                                                                   relay: RecordingUpstream) -> None:
    """Open WebUI puts its RAG template and sources before the person's message and its code interpreter's prompt
    after it, in the same message: BPO rewrites the message alone, the app's text goes as it came around the
    rewrite, in a message of text parts and an image too, and the skip prefix works inside it."""
    question = "what does the report say about rainfall in the north"
    documents = {"report.txt": "Rainfall in the north rose 20% in 2024, while the south stayed dry."}
    before, after = open_webui_rag("", documents), with_code_interpreter("")
    turn = httpx.post(f"{proxy.base_url}/chat/completions", headers=JSON, timeout=120, content=open_webui_turn(
        [{"role": "user", "content": open_webui_rag(with_code_interpreter(question), documents)}]))
    assert turn.status_code == 200 and turn.headers["x-bpo-turn"] == "rewritten", turn.headers
    rewrite = unquote(turn.headers["x-bpo-optimized-prompt"])
    assert relay.last("/v1/chat/completions").request["messages"][0]["content"] == before + rewrite + after
    assert [entry["prompt"] for entry in proxy.logged(question, timeout=5)] == [question]  # the message alone
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with_image = [{"type": "text", "text": open_webui_rag(question, documents)}, image]
    httpx.post(f"{proxy.base_url}/chat/completions", timeout=120,
               json={"model": "target", "max_tokens": 4, "messages": [{"role": "user", "content": with_image}]})
    parts = relay.last("/v1/chat/completions").request["messages"][0]["content"]  # the upstream may refuse the image
    assert parts == [{"type": "text", "text": before + rewrite}, image]  # the same message: its rewrite remembered
    skip = httpx.post(f"{proxy.base_url}/chat/completions", headers=JSON, timeout=120, content=open_webui_turn(
        [{"role": "user", "content": open_webui_rag("!raw " + question + " today", documents)}]))
    assert skip.status_code == 200 and skip.headers["x-bpo-turn"] == "skipped"
    assert relay.last("/v1/chat/completions").request["messages"][0]["content"] == before + question + " today"


def test_claude_code_keeps_its_reminders_around_the_rewrite_and_its_own_requests_pass(
        proxy: BpoServer, relay: RecordingUpstream) -> None:
    """Claude Code's first turn: its context reminder and the IDE's reminder stay the blocks they came as (the
    cache mark kept) around the rewrite of the person's text alone; its title request and quota check go upstream
    untouched, with no generation."""
    prompt = "fix the failing test in test_parse.py"
    client = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(model="target", max_tokens=8, system=CLAUDE_CODE_SYSTEM,
                                                   messages=claude_code_turn(prompt))
    assert raw.headers["x-bpo-turn"] == "rewritten", raw.headers
    rewrite = unquote(raw.headers["x-bpo-optimized-prompt"])
    assert relay.last("/v1/messages").request["messages"] == claude_code_turn(rewrite)
    asked = "write a docstring for parse_line"  # PAS appends to the prompt: the change starts at its block's end
    raw = client.messages.with_raw_response.create(model="target", max_tokens=8, system=CLAUDE_CODE_SYSTEM,
                                                   messages=claude_code_turn(asked),
                                                   extra_headers={"X-BPO-Mode": "pas"})
    appended = unquote(raw.headers.get("x-bpo-optimized-prompt", asked))
    assert appended == asked or appended.startswith(asked + "\n"), appended
    assert relay.last("/v1/messages").request["messages"] == claude_code_turn(appended)  # its supplement in its block
    title = {"model": "target", "max_tokens": 8, "messages": [{"role": "user", "content": prompt}],
             "system": [*CLAUDE_CODE_SYSTEM[:2], {"type": "text", "text": CLAUDE_CODE_TITLE}]}
    quota = {"model": "target", "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}
    for body, task in ((title, "Claude Code: session title"), (quota, "Claude Code: quota check")):
        sent = json.dumps(body).encode()
        reply = httpx.post(f"{proxy.url}/v1/messages", content=sent, headers=JSON, timeout=120)
        assert reply.status_code == 200 and reply.json()["bpo"]["reason"] == task, reply.text
        assert relay.last("/v1/messages").body == sent  # byte for byte
    assert [entry["prompt"] for entry in proxy.logged(prompt, timeout=5)] == [prompt]  # the person's text alone
    assert generations(proxy, "quota") == 0
    later = "rename the parse function to parse_line"  # 2.1.337 may send reminders after it as a system message
    httpx.post(f"{proxy.url}/v1/messages", headers=JSON, timeout=120, json={
        "model": "target", "max_tokens": 8, "messages": [
            {"role": "user", "content": later},
            {"role": "system", "content": [{"type": "text", "text": CLAUDE_CODE_OPENED}]}]})
    rewrite = proxy.logged(later, timeout=5)[0]["output"]
    assert relay.last("/v1/messages").request["messages"][0] == {"role": "user", "content": rewrite}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    pasted = [{"role": "user", "content": [{"type": "text", "text": CLAUDE_CODE_OPENED}, image]},
              {"role": "assistant", "content": "A red pixel."}, {"role": "user", "content": "make it blue"}]
    httpx.post(f"{proxy.url}/v1/messages", headers=JSON, timeout=120,  # an image pasted without words first
               json={"model": "target", "max_tokens": 8, "messages": pasted})  # (the upstream refuses images)
    assert relay.last("/v1/messages").request["messages"] == pasted  # a follow-up: the image was the first turn
    assert generations(proxy, "make it blue") == 0


def test_codex_context_messages_are_not_the_persons_first_turn(proxy: BpoServer, relay: RecordingUpstream) -> None:
    """Codex sends its AGENTS.md and environment context as a user message of their own before the person's
    prompt, and a new environment context before each later one: the person's prompt is the conversation's first
    turn and is rewritten, the next is a follow-up carrying the first's rewrite, and Codex's own go as they came."""
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    first = "add a test for the parse function"
    raw = client.responses.with_raw_response.create(model="target", instructions="You are Codex.",
                                                    input=codex_input(first), max_output_tokens=8)
    assert raw.headers["x-bpo-turn"] == "rewritten", raw.headers
    rewrite = unquote(raw.headers["x-bpo-optimized-prompt"])
    assert relay.last("/v1/responses").request["input"] == codex_input(rewrite)
    raw = client.responses.with_raw_response.create(model="target", instructions="You are Codex.",
                                                    input=codex_input(first, "Added.", "now run it"),
                                                    max_output_tokens=8)
    assert raw.headers["x-bpo-turn"] == "follow-up", raw.headers
    assert relay.last("/v1/responses").request["input"] == codex_input(rewrite, "Added.", "now run it")


def test_tasks_rewrite_restores_the_old_behaviour(smollm2_gguf: Path, relay: RecordingUpstream, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", "--tasks", "rewrite",
                         home=tmp_path) as proxy:
        sent = open_webui_task(OPEN_WEBUI_TITLE, [{"role": "user", "content": "hello"}], max_tokens=64)
        reply = httpx.post(f"{proxy.base_url}/chat/completions", content=sent, headers=JSON, timeout=120).json()
        assert reply["bpo"]["turn"] in ("rewritten", "failed") and relay.last("/v1/chat/completions").body != sent


def test_show_rewrite_streams_the_block_first_and_never_sends_it_back(proxy: BpoServer,
                                                                      relay: RecordingUpstream) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    ask = [{"role": "user", "content": "write a limerick about rain"}]
    chunks = list(client.chat.completions.create(model="target", messages=ask, max_tokens=12, temperature=0,
                                                 stream=True, extra_headers={"X-BPO-Show-Rewrite": "true"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    record = next(c.model_extra["bpo"] for c in chunks if "bpo" in c.model_extra)
    sent = relay.last("/v1/chat/completions")
    block = f"<details><summary>BPO's rewrite of your prompt</summary>\n\n{record['optimized_prompt']}\n\n</details>\n\n"
    assert text == block + sent.answer_text() and sent.request["messages"][0]["content"] == record["optimized_prompt"]
    follow = [*ask, {"role": "assistant", "content": text}, {"role": "user", "content": "another one"}]
    again = client.chat.completions.create(model="target", messages=follow, max_tokens=8, temperature=0,
                                           extra_headers={"X-BPO-Show-Rewrite": "true"})
    history = relay.last("/v1/chat/completions").request["messages"]
    assert history[1]["content"] == sent.answer_text() and "<details>" not in json.dumps(history)
    assert "<details>" not in again.choices[0].message.content  # a follow-up: nothing of BPO's to show


def test_an_upstream_refusal_after_the_shown_rewrite_is_the_apis_own_error_event(proxy: BpoServer) -> None:
    """Once a --show-rewrite stream has begun (with BPO's block), a refusal from the upstream ends it as the API's own
    error event, which each official client raises; llama-server refuses a field of the wrong type with a 400."""
    show, prompt = {"X-BPO-Show-Rewrite": "true"}, "write a limerick about rain"
    ask = [{"role": "user", "content": prompt}]
    chat = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    shown = ""
    with pytest.raises(openai.APIError, match="upstream answered HTTP 400: .*n_probs"):
        for chunk in chat.chat.completions.create(model="target", messages=ask, max_tokens=8, stream=True,
                                                  extra_headers=show, extra_body={"n_probs": "x"}):
            shown += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert shown.startswith("<details><summary>BPO's rewrite")
    events = list(chat.responses.create(model="target", input=prompt, max_output_tokens=8, stream=True,
                                        extra_headers=show, extra_body={"n_probs": "x"}))
    failed = events[-1]
    assert failed.type == "response.failed" and "n_probs" in failed.response.error.message
    assert failed.response.output[0].content[0].text.startswith("<details><summary>BPO's rewrite")
    messages = anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError, match="top_k"):
        for _ in messages.messages.create(model="target", max_tokens=8, messages=ask, stream=True, extra_headers=show,
                                          extra_body={"top_k": "x"}):
            pass
    with pytest.raises(ollama.ResponseError, match="top_k"):
        for _ in ollama.Client(host=proxy.url, headers=show).chat(model="target", messages=ask, stream=True,
                                                                  options={"top_k": "x", "num_predict": 8}):
            pass
    assert generations(proxy, prompt) == 1  # the rewrite was made once, and shown each time
    assert proxy.log.read_text().count("a stream already answering failed: upstream answered HTTP 400") >= 4


def test_a_prefix_skips_bpo_for_one_message(proxy: BpoServer, relay: RecordingUpstream) -> None:
    reply = httpx.post(f"{proxy.base_url}/chat/completions", timeout=120, json={
        "model": "target", "max_tokens": 8, "messages": [{"role": "user", "content": "!raw what is 2+2"}]}).json()
    assert reply["bpo"]["turn"] == "skipped"
    assert relay.last("/v1/chat/completions").request["messages"] == [{"role": "user", "content": "what is 2+2"}]
    assert generations(proxy, "!raw what is 2+2") == 0 and generations(proxy, "what is 2+2") == 0
    assert "POST /v1/chat/completions 200" in proxy.log.read_text() and "(skipped)" in proxy.log.read_text()


def test_a_rewrite_over_its_timeout_forwards_the_original_in_time(smollm2_gguf: Path, relay: RecordingUpstream,
                                                                  tmp_path: Path) -> None:
    long = "please summarise this: " + "the quick brown fox jumps over the lazy dog " * 60  # ~600 tokens to read
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", "--rewrite-timeout", "0.2",
                         home=tmp_path) as proxy:
        for _ in range(2):  # nothing is stored: the retry tries again
            started = time.monotonic()
            reply = httpx.post(f"{proxy.base_url}/chat/completions", timeout=120, json={
                "model": "target", "max_tokens": 4, "messages": [{"role": "user", "content": long}]}).json()
            assert reply["bpo"]["turn"] == "failed" and "0.2 s" in reply["bpo"]["reason"], reply["bpo"]
            assert relay.last("/v1/chat/completions").request["messages"][0]["content"] == long
            assert time.monotonic() - started < 30


def test_ollama_routes_answer_errors_in_ollamas_shape(smollm2_gguf: Path, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"http://127.0.0.1:{free_port()}/v1",
                         home=tmp_path) as proxy:
        reply = httpx.post(f"{proxy.url}/api/chat", json={"model": "t", "stream": False,
                                                          "messages": [{"role": "user", "content": "!raw hi"}]})
        assert reply.status_code == 502 and isinstance(reply.json()["error"], str), reply.text
    assert "serving anyway" in proxy.log.read_text()  # said at start-up, and serve went on


def test_ctrl_c_stops_serve_with_exit_0(smollm2_gguf: Path, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, "--ctx", "512", home=tmp_path) as server:
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(30) == 0


def test_sigterm_answers_every_request_in_flight_in_its_apis_shape(smollm2_gguf: Path, llama_server,
                                                                  tmp_path: Path) -> None:
    """One rewrite running (a long prompt to read), one queued behind it, one waiting on a slow upstream:
    SIGTERM, and within the grace each gets a well-formed answer in its own API's error shape."""
    long = "summarise: " + "the quick brown fox jumps over the lazy dog " * 150
    with RecordingUpstream.start(llama_server.url, delay=60) as slow, \
            BpoServer.start(smollm2_gguf, "--ctx", "4096", "--seed", "1", "--parallel", "1", "--grace", "1",
                            "--rewrite-timeout", "0", "--upstream", f"{slow.url}/v1", home=tmp_path) as proxy:
        answers: dict[str, httpx.Response] = {}

        def ask(name: str, path: str, body: dict, headers: dict | None = None) -> None:
            answers[name] = httpx.post(f"{proxy.url}{path}", json=body, headers=headers, timeout=60)

        requests = [
            ("running", "/v1/chat/completions", {"model": "t", "messages": [{"role": "user", "content": long}]}),
            ("queued", "/v1/messages", {"model": "t", "max_tokens": 8,
                                        "messages": [{"role": "user", "content": "queued " + long}]}),
            ("upstream", "/api/chat", {"model": "t", "stream": False,
                                       "messages": [{"role": "user", "content": "!raw hello"}]}),
        ]
        threads = [threading.Thread(target=ask, args=r) for r in requests]
        for thread in threads:
            thread.start()
            time.sleep(0.5)
        proxy.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for thread in threads:
            thread.join(30)
        assert time.monotonic() - started < 15 and proxy.process.wait(30) == 0
    assert answers["running"].status_code == 503 and answers["running"].json()["error"]["code"] == "shutting_down"
    assert answers["queued"].status_code == 503 and answers["queued"].json()["type"] == "error"
    assert answers["upstream"].status_code == 503 and isinstance(answers["upstream"].json()["error"], str)
    assert "Traceback" not in proxy.log.read_text()


def test_the_persons_rewrite_goes_ahead_of_what_bpo_has_queued(smollm2_gguf: Path, relay: RecordingUpstream,
                                                               tmp_path: Path) -> None:
    """One decoding slot: a long /v1/optimize runs, a second waits, then a person's turn arrives; the person's
    rewrite is decoded before the second optimization (the run log keeps their order)."""
    # near-uniform sampling never stops early: one candidate of 150 tokens keeps the slot busy for seconds
    long = {"temperature": 3, "top_k": 0, "top_p": 1, "seed": 1, "max_tokens": 150, "n": 1}
    with BpoServer.start(smollm2_gguf, "--ctx", "1024", "--seed", "1", "--max-tokens", "150", "--mode", "aggressive",
                         "--parallel", "1", "--upstream", f"{relay.url}/v1", home=tmp_path) as proxy:
        requests = [("/v1/optimize", {"prompt": "first in line", **long}),
                    ("/v1/optimize", {"prompt": "second in line", **long}),
                    ("/v1/chat/completions", {"model": "target", "max_tokens": 4,
                                              "messages": [{"role": "user", "content": "a person asks"}]})]
        threads = [threading.Thread(target=httpx.post, args=(f"{proxy.url}{path}",),
                                    kwargs={"json": body, "timeout": 300}) for path, body in requests]
        for thread in threads:
            thread.start()
            time.sleep(0.3)
        for thread in threads:
            thread.join(300)
        order = [entry["prompt"] for entry in reversed(proxy.logged(timeout=5))]
    assert order == ["first in line", "a person asks", "second in line"], order
