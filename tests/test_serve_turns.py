"""The proxy in chat traffic: one rewrite per user turn, kept in the rewrite store for the whole
conversation (retries, follow-ups, tool rounds, restarts); other routes passed through; limits.

BPO is SmolLM2 (seed 1; aggressive, whose minimum length keeps its rewrites from being empty); the
upstream is a real llama-server behind a relay that keeps what it got.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
import openai
import pytest
from _recording_upstream import RecordingUpstream
from _serve_helpers import BpoServer

from bpo_local.serve.store import RewriteStore

GREEDY = {"temperature": 0, "seed": 0, "max_tokens": 16}
BPO = ("--ctx", "1024", "--seed", "1", "--max-tokens", "48", "--mode", "aggressive")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("turns-home")


@pytest.fixture(scope="module")
def proxy(smollm2_gguf: Path, relay: RecordingUpstream, home: Path):
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", home=home) as server:
        yield server


@pytest.fixture(scope="module")
def client(proxy: BpoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)


def chat(client: openai.OpenAI, messages: list[dict], **headers: str):
    raw = client.chat.completions.with_raw_response.create(model="target", messages=messages,
                                                           extra_headers=headers, **GREEDY)
    reply = raw.parse()
    return reply, reply.model_extra["bpo"]


def chats(relay: RecordingUpstream) -> list[dict]:
    """The chat bodies the proxy forwarded, oldest first."""
    return [e.request for e in relay.exchanges if e.path == "/v1/chat/completions"]


def generations(proxy: BpoServer, prompt: str) -> int:
    return sum(1 for entry in proxy.logged(prompt, timeout=2) if entry["prompt"] == prompt)


def test_a_retry_gets_the_same_rewrite_without_generating(client, proxy: BpoServer, relay: RecordingUpstream) -> None:
    question = [{"role": "user", "content": "name three rivers"}]
    first, bpo = chat(client, question)
    assert bpo["turn"] == "rewritten" and bpo["status"] == "optimized"
    assert chats(relay)[-1]["messages"][0]["content"] == bpo["optimized_prompt"]
    assert first.choices[0].message.content == _answer(relay)
    again, remembered = chat(client, question)
    assert remembered["turn"] == "remembered" and remembered["optimized_prompt"] == bpo["optimized_prompt"]
    assert chats(relay)[-1]["messages"] == chats(relay)[-2]["messages"]
    assert generations(proxy, "name three rivers") == 1


def test_a_follow_up_carries_the_stored_rewrite_and_is_not_rewritten(client, proxy, relay) -> None:
    question = {"role": "user", "content": "describe a cat"}
    answer, bpo = chat(client, [question])
    assert bpo["turn"] == "rewritten", bpo["reason"]
    history = [question, {"role": "assistant", "content": answer.choices[0].message.content}]
    _, follow = chat(client, [*history, {"role": "user", "content": "make it shorter"}])
    assert follow["turn"] == "follow-up" and follow["optimized_prompt"] is None and follow["history_rewritten"] == 1
    forwarded = chats(relay)[-1]["messages"]
    assert forwarded[0]["content"] == bpo["optimized_prompt"] and forwarded[2]["content"] == "make it shorter"
    assert forwarded[1] == history[1]
    _, each = chat(client, [*history, {"role": "user", "content": "make it shorter"}], **{"X-BPO-Turns": "all"})
    assert each["turn"] == "rewritten" and each["optimized_prompt"]
    assert chats(relay)[-1]["messages"][2]["content"] == each["optimized_prompt"]
    assert generations(proxy, "describe a cat") == 1 and generations(proxy, "make it shorter") == 1


def test_instructions_after_the_persons_message_leave_it_the_last_turn(client, proxy, relay) -> None:
    """An app's instructions sent after the chat (SillyTavern's post-history instructions, a system or developer
    message) are not the conversation's last turn: the person's message before them is rewritten, and they go
    upstream as they came."""
    after = {"role": "system", "content": "Stay in character and answer in two sentences."}
    question = {"role": "user", "content": "tell me about the lighthouse keeper"}
    _, bpo = chat(client, [{"role": "system", "content": "You are a storyteller."}, question, after])
    assert bpo["turn"] == "rewritten", bpo["reason"]
    forwarded = chats(relay)[-1]["messages"]
    assert forwarded[1]["content"] == bpo["optimized_prompt"] and forwarded[2] == after
    _, answered = chat(client, [question, {"role": "assistant", "content": "Once upon a time."},
                                {"role": "developer", "content": "Continue."}])
    assert answered["turn"] == "not a new user turn"
    assert chats(relay)[-1]["messages"][0]["content"] == bpo["optimized_prompt"]
    assert generations(proxy, question["content"]) == 1


def test_a_tool_round_makes_no_new_rewrite(proxy: BpoServer, relay: RecordingUpstream) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny, 21 C"

    model = ChatOpenAI(base_url=proxy.base_url, api_key="x", model="target", temperature=0, max_tokens=16,
                       max_retries=0).bind_tools([weather])
    task = HumanMessage("what is the weather in Paris")
    model.invoke([task])
    rewrite = chats(relay)[-1]["messages"][0]["content"]
    assert rewrite != task.content and chats(relay)[-1]["tools"][0]["function"]["name"] == "weather"
    call = AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}])
    second = model.invoke([task, call, ToolMessage(weather.invoke({"city": "Paris"}), tool_call_id="call_1")])
    forwarded = chats(relay)[-1]["messages"]
    assert forwarded[0]["content"] == rewrite and forwarded[2] == {"role": "tool", "content": "sunny, 21 C",
                                                                   "tool_call_id": "call_1"}
    assert second.content == _answer(relay)
    assert generations(proxy, task.content) == 1


def test_identical_requests_at_once_share_one_generation(proxy: BpoServer, relay: RecordingUpstream) -> None:
    async def both() -> list:
        async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as client:
            ask = [{"role": "user", "content": "list two colours"}]
            return await asyncio.gather(*(client.chat.completions.create(model="target", messages=ask, **GREEDY)
                                          for _ in range(2)))

    replies = asyncio.run(both())
    records = [r.model_extra["bpo"] for r in replies]
    assert records[0]["optimized_prompt"] == records[1]["optimized_prompt"] is not None
    assert generations(proxy, "list two colours") == 1


def test_the_store_survives_a_restart_and_is_private_and_history_may_stay_original(
        smollm2_gguf: Path, proxy: BpoServer, relay, home: Path, client) -> None:
    _, bpo = chat(client, [{"role": "user", "content": "explain rain"}])
    store = home / "rewrites.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    with BpoServer.start(smollm2_gguf, *BPO, "--history", "original", "--upstream", f"{relay.url}/v1",
                         home=home) as second:
        again = openai.OpenAI(base_url=second.base_url, api_key="x", max_retries=0)
        answer, remembered = chat(again, [{"role": "user", "content": "explain rain"}])
        assert remembered["turn"] == "remembered" and remembered["optimized_prompt"] == bpo["optimized_prompt"]
        history = [{"role": "user", "content": "explain rain"},
                   {"role": "assistant", "content": answer.choices[0].message.content}]
        _, follow = chat(again, [*history, {"role": "user", "content": "why?"}])
    assert follow["history_rewritten"] == 0 and chats(relay)[-1]["messages"][:2] == history  # --history original
    assert generations(proxy, "explain rain") == 1


def test_mode_off_forwards_everything_as_typed(client, relay: RecordingUpstream) -> None:
    question = [{"role": "user", "content": "name three rivers"}]
    _, bpo = chat(client, question, **{"X-BPO-Mode": "off"})
    assert bpo["turn"] == "off" and chats(relay)[-1]["messages"] == question


def test_other_routes_pass_through_unchanged(proxy: BpoServer, relay: RecordingUpstream) -> None:
    body = b'{"prompt": "The sky is", "max_tokens": 6, "temperature": 0}'
    response = httpx.post(f"{proxy.base_url}/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 200
    passed = relay.last("/v1/completions")
    assert passed.body == body and passed.done.wait(60)
    assert response.content == passed.answer and "bpo" not in response.json()
    embeddings = httpx.post(f"{proxy.base_url}/embeddings", json={"input": "hi", "model": "target"}, timeout=30)
    passed = relay.last("/v1/embeddings")  # this llama-server has no embeddings: its 501 comes back
    assert passed.done.wait(60) and (embeddings.status_code, embeddings.content) == (passed.status, passed.answer)


def test_n_and_prompts_over_the_limit_are_400(proxy: BpoServer) -> None:
    big = httpx.post(f"{proxy.base_url}/optimize", json={"prompt": "hi", "n": 100000}, timeout=30)
    message = big.json()["error"]["message"]
    assert big.status_code == 400 and "100000" in message and "limit of 8" in message and "--" not in message
    many = httpx.post(f"{proxy.base_url}/optimize", json={"prompts": ["hi"] * 65}, timeout=30)
    message = many.json()["error"]["message"]
    assert many.status_code == 400 and "65 prompts" in message and "limit of 64" in message and "--" not in message


def test_a_bad_turns_header_is_400(proxy: BpoServer) -> None:
    response = httpx.post(f"{proxy.base_url}/chat/completions", headers={"X-BPO-Turns": "some"},
                          json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and "X-BPO-Turns" in response.json()["error"]["message"]


def test_a_full_store_forgets_the_least_recently_used(tmp_path: Path) -> None:
    store = RewriteStore.open(tmp_path / "rewrites.db", capacity=2)
    store.put("a", "A", "rewrite of A", "stable")
    store.put("b", "B", "rewrite of B", "stable")
    assert store.get("a") == "rewrite of A"  # a is now the most recently used
    store.put("c", "C", "rewrite of C", "stable")
    assert store.get_many(["a", "b", "c"]) == {"a": "rewrite of A", "c": "rewrite of C"} and len(store) == 2
    store.close()


def _answer(relay: RecordingUpstream) -> str:
    """What the real server answered to the last chat the relay passed on."""
    return relay.last("/v1/chat/completions").answer_text()


OLLAMA_OPTIONS = {"temperature": 0, "seed": 0, "num_predict": 12, "top_k": 1}


def test_an_ollama_client_chats_whole_and_streamed(proxy: BpoServer, relay: RecordingUpstream) -> None:
    import ollama

    client = ollama.Client(host=proxy.url)
    ask = [{"role": "user", "content": "name a fruit"}]
    whole = client.chat(model="target", messages=ask, stream=False, options=OLLAMA_OPTIONS)
    forwarded = chats(relay)[-1]
    assert forwarded["max_tokens"] == 12 and forwarded["temperature"] == 0 and forwarded["top_k"] == 1
    rewrite = forwarded["messages"][0]["content"]
    assert rewrite != "name a fruit" and whole.message.content == _answer(relay) and whole.done
    parts = list(client.chat(model="target", messages=ask, stream=True, options=OLLAMA_OPTIONS))
    assert chats(relay)[-1]["messages"][0]["content"] == rewrite and chats(relay)[-1]["stream"] is True
    assert "".join(p.message.content for p in parts) == _answer(relay)
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    record = httpx.post(f"{proxy.url}/api/chat", json={"model": "target", "messages": ask, "stream": False,
                                                       "options": OLLAMA_OPTIONS}, timeout=60).json()["bpo"]
    assert record["turn"] == "remembered" and record["optimized_prompt"] == rewrite
    assert generations(proxy, "name a fruit") == 1


def test_an_ollama_client_generates_and_lists(proxy: BpoServer, relay: RecordingUpstream, llama_server) -> None:
    import ollama

    client = ollama.Client(host=proxy.url)
    answer = client.generate(model="target", prompt="say hello", system="Be brief.", options=OLLAMA_OPTIONS)
    forwarded = chats(relay)[-1]["messages"]
    assert forwarded[0] == {"role": "system", "content": "Be brief."} and forwarded[1]["content"] != "say hello"
    assert answer.response == _answer(relay) and answer.done
    listed = [m.model for m in client.list().models]
    assert listed == [m["id"] for m in httpx.get(f"{llama_server.url}/v1/models").json()["data"]]
    assert client.show("target").capabilities == ["completion"]
    assert httpx.get(f"{proxy.url}/api/version").json()["version"]


def test_a_store_that_cannot_be_opened_is_one_line(run_cli, smollm2_gguf: Path, tmp_path: Path) -> None:
    from _cli_helpers import assert_one_line_error

    (tmp_path / "rewrites.db").mkdir()  # a folder where the store's file should be
    proc = run_cli("serve", "--model", str(smollm2_gguf), "--upstream", "http://127.0.0.1:9/v1",
                   env={"BPO_LOCAL_HOME": str(tmp_path)})
    assert_one_line_error(proc, 1, "rewrites.db", "delete it")


def test_an_ollama_tool_round_is_translated_and_makes_no_new_rewrite(proxy: BpoServer, relay) -> None:
    import ollama

    client = ollama.Client(host=proxy.url)
    task = {"role": "user", "content": "what is the weather in Rome"}
    client.chat(model="target", messages=[task], options=OLLAMA_OPTIONS)
    rewrite = chats(relay)[-1]["messages"][0]["content"]
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Rome"}}}]}
    reply = client.chat(model="target", messages=[task, call, {"role": "tool", "content": "rainy"}],
                        options=OLLAMA_OPTIONS, stream=False)
    forwarded = chats(relay)[-1]["messages"]
    assert forwarded[0]["content"] == rewrite != task["content"]
    assert forwarded[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Rome"}'}
    assert forwarded[2] == {"role": "tool", "content": "rainy", "tool_call_id": forwarded[1]["tool_calls"][0]["id"]}
    assert reply.message.content == _answer(relay) and generations(proxy, task["content"]) == 1
