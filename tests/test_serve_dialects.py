"""The proxy in the APIs agents speak: OpenAI's Responses (Codex, the Agents SDK) and Anthropic's Messages
(Claude Code), driven by the official SDKs, in front of a real llama-server that serves both, behind a relay
that keeps what it got; and in front of an older server without them, which gets chat completions.

BPO is SmolLM2 (seed 1, aggressive: its minimum length keeps rewrites from being empty). Every answer a
client gets is compared with what the real server sent for the very request the proxy made.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import unquote

import anthropic
import httpx
import openai
import pytest
from _recording_upstream import RecordingUpstream
from _serve_helpers import BpoServer

BPO = ("--ctx", "1024", "--seed", "1", "--max-tokens", "48", "--mode", "aggressive")
KEY = "proxy-key"
WITHOUT_THE_APIS = ("/v1/responses", "/v1/messages")
GREEDY = {"temperature": 0}
"""Sent as extra body: anthropic's SDK no longer takes temperature, servers still do."""


@pytest.fixture(scope="module")
def proxy(smollm2_gguf: Path, relay: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory):
    """Locked with a key, as an agent's proxy on a shared machine would be."""
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", "--api-key", KEY,
                         home=tmp_path_factory.mktemp("dialects-home")) as server:
        yield server


@pytest.fixture(scope="module")
def responses(proxy: BpoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(proxy: BpoServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)


def exchanges(relay: RecordingUpstream, path: str) -> list:
    return [e for e in relay.exchanges if e.path == path and e.body != b"{}"]  # not the proxy's one probe


def generations(proxy: BpoServer, prompt: str) -> int:
    return sum(1 for entry in proxy.logged(prompt, timeout=2) if entry["prompt"] == prompt)


def test_responses_whole_forwards_the_rewrite_and_remembers_the_turn(responses: openai.OpenAI, proxy: BpoServer,
                                                                      relay: RecordingUpstream) -> None:
    ask = {"model": "target", "input": "explain recursion", "instructions": "Be brief.", "max_output_tokens": 16,
           "temperature": 0}
    raw = responses.responses.with_raw_response.create(**ask)
    reply = raw.parse()
    bpo = reply.model_extra["bpo"]
    assert bpo["turn"] == "rewritten" and bpo["original_prompt"] == "explain recursion" and not bpo["translated"]
    assert raw.headers["x-bpo-turn"] == "rewritten"
    rewrite = unquote(raw.headers["x-bpo-optimized-prompt"])
    sent = exchanges(relay, "/v1/responses")[-1]
    assert sent.request["input"] == rewrite == bpo["optimized_prompt"] != "explain recursion"
    assert sent.request["instructions"] == "Be brief." and "authorization" not in sent.headers  # our key stays here
    assert reply.output_text == sent.responses_text() and reply.output_text
    again = responses.responses.create(**ask).model_extra["bpo"]
    assert again["turn"] == "remembered" and exchanges(relay, "/v1/responses")[-1].request["input"] == rewrite
    assert generations(proxy, "explain recursion") == 1


def test_responses_streamed_with_items_gets_the_servers_events(responses: openai.OpenAI,
                                                               relay: RecordingUpstream) -> None:
    item = {"role": "user", "content": [{"type": "input_text", "text": "name three rivers"}]}
    with responses.responses.with_streaming_response.create(model="target", input=[item], max_output_tokens=16,
                                                            temperature=0, stream=True) as response:
        assert response.headers["x-bpo-turn"] == "rewritten"
        events = list(response.parse())
    assert events[0].type == "response.created" and events[0].model_extra["bpo"]["turn"] == "rewritten"
    sent = exchanges(relay, "/v1/responses")[-1]
    rewrite = events[0].model_extra["bpo"]["optimized_prompt"]
    assert sent.request["input"] == [{"role": "user", "content": [{"type": "input_text", "text": rewrite}]}]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == sent.responses_text() and events[-1].type == "response.completed"


def test_responses_tool_round_and_follow_up_make_no_rewrite(responses: openai.OpenAI, proxy: BpoServer,
                                                            relay: RecordingUpstream) -> None:
    task = {"role": "user", "content": "what is the weather in Oslo"}
    first = responses.responses.create(model="target", input=[task], max_output_tokens=8, temperature=0)
    rewrite = first.model_extra["bpo"]["optimized_prompt"]
    rounds = [task, {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Oslo"}'},
              {"type": "function_call_output", "call_id": "call_1", "output": "snow"}]
    tool = responses.responses.create(model="target", input=rounds, max_output_tokens=8, temperature=0)
    bpo = tool.model_extra["bpo"]
    assert bpo["turn"] == "not a new user turn" and bpo["history_rewritten"] == 1
    forwarded = exchanges(relay, "/v1/responses")[-1].request["input"]
    assert forwarded[0]["content"] == rewrite and forwarded[1:] == rounds[1:]
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):  # llama-server keeps no responses
        responses.responses.create(model="target", input="and tomorrow?", previous_response_id="resp_earlier",
                                   max_output_tokens=8)
    assert exchanges(relay, "/v1/responses")[-1].request["input"] == "and tomorrow?"  # a follow-up: as typed
    assert generations(proxy, task["content"]) == 1 and generations(proxy, "and tomorrow?") == 0


def test_messages_whole_with_x_api_key_and_bearer(claude: anthropic.Anthropic, proxy: BpoServer,
                                                  relay: RecordingUpstream) -> None:
    ask = {"model": "target", "max_tokens": 16, "extra_body": {"temperature": 0}, "system": "Be brief.",
           "messages": [{"role": "user", "content": "why is the sky blue"}]}
    raw = claude.messages.with_raw_response.create(**ask)
    reply = raw.parse()
    bpo = reply.model_extra["bpo"]
    sent = exchanges(relay, "/v1/messages")[-1]
    assert bpo["turn"] == "rewritten" and sent.request["messages"][0]["content"] == bpo["optimized_prompt"]
    assert sent.request["system"] == "Be brief." and "x-api-key" not in sent.headers
    assert reply.content[0].text == sent.messages_text() and reply.stop_reason in ("end_turn", "max_tokens")
    bearer = anthropic.Anthropic(base_url=proxy.url, auth_token=KEY, max_retries=0)
    assert bearer.messages.create(**ask).model_extra["bpo"]["turn"] == "remembered"
    as_claude_code = httpx.post(f"{proxy.url}/v1/messages", json={k: v for k, v in ask.items() if k != "extra_body"},
                                headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}, timeout=120)
    assert as_claude_code.status_code == 200 and as_claude_code.json()["bpo"]["turn"] == "remembered"
    assert generations(proxy, "why is the sky blue") == 1


def test_messages_streamed_and_a_tool_result_turn(claude: anthropic.Anthropic, proxy: BpoServer,
                                                  relay: RecordingUpstream) -> None:
    task = {"role": "user", "content": [{"type": "text", "text": "list the files here"}]}
    events = list(claude.messages.create(model="target", max_tokens=16, extra_body=GREEDY, messages=[task], stream=True))
    assert events[0].type == "message_start" and events[0].model_extra["bpo"]["turn"] == "rewritten"
    rewrite = events[0].model_extra["bpo"]["optimized_prompt"]
    sent = exchanges(relay, "/v1/messages")[-1]
    assert sent.request["messages"][0]["content"] == [{"type": "text", "text": rewrite}]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == sent.messages_text() and events[-1].type == "message_stop"
    rounds = [task, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]}]
    tool = claude.messages.create(model="target", max_tokens=8, extra_body=GREEDY, messages=rounds)
    assert tool.model_extra["bpo"]["turn"] == "not a new user turn"
    forwarded = exchanges(relay, "/v1/messages")[-1].request["messages"]
    assert forwarded[0]["content"] == [{"type": "text", "text": rewrite}] and forwarded[1:] == rounds[1:]
    assert generations(proxy, "list the files here") == 1
    counted = claude.messages.count_tokens(model="target", messages=rounds)
    assert counted.input_tokens > 0  # passed through to the upstream


def test_a_wrong_key_is_401_in_each_apis_own_shape(proxy: BpoServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=proxy.url, api_key="wrong", max_retries=0).messages.create(
            model="t", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=proxy.base_url, api_key="wrong", max_retries=0).responses.create(model="t", input="hi")
    assert refused.value.body["code"] == "invalid_api_key"
    ollama = httpx.post(f"{proxy.url}/api/chat", json={"model": "t", "messages": []})
    assert ollama.status_code == 401 and isinstance(ollama.json()["error"], str)


def test_an_upstream_without_the_apis_gets_chat_completions(smollm2_gguf: Path, llama_server,
                                                            tmp_path: Path) -> None:
    """An older OpenAI-compatible server (404 on /v1/responses and /v1/messages): asked once, then every
    request goes as chat completions, and the client still gets its own API's answer."""
    with RecordingUpstream.start(llama_server.url, missing=WITHOUT_THE_APIS) as old, \
            BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{old.url}/v1", home=tmp_path) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
        reply = client.responses.create(model="target", input="describe a cat", instructions="Be brief.",
                                        max_output_tokens=16, temperature=0)
        bpo = reply.model_extra["bpo"]
        chat = old.last("/v1/chat/completions")
        assert bpo["translated"] and bpo["upstream_route"] == "/chat/completions"
        assert chat.request["messages"] == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": bpo["optimized_prompt"]}]
        assert chat.request["max_tokens"] == 16 and chat.headers["authorization"] == "Bearer client-key"
        assert reply.output_text == chat.answer_text()
        finish = json.loads(chat.answer)["choices"][0]["finish_reason"]
        assert (reply.status, reply.incomplete_details and reply.incomplete_details.reason) == (
            ("incomplete", "max_output_tokens") if finish == "length" else ("completed", None))
        streamed = list(client.responses.create(model="target", input="describe a cat", max_output_tokens=16,
                                                temperature=0, stream=True))
        text = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")
        assert text == old.last("/v1/chat/completions").answer_text()
        assert streamed[-1].type == f"response.{streamed[-1].response.status}"
        claude = anthropic.Anthropic(base_url=proxy.url, api_key="client-key", max_retries=0)
        message = claude.messages.create(model="target", max_tokens=16, extra_body=GREEDY,
                                         messages=[{"role": "user", "content": "describe a dog"}])
        chat = old.last("/v1/chat/completions")
        assert chat.request["messages"][0]["content"] == message.model_extra["bpo"]["optimized_prompt"]
        assert message.content[0].text == chat.answer_text() and chat.headers["authorization"] == "Bearer client-key"
        events = list(claude.messages.create(model="target", max_tokens=16, extra_body=GREEDY, stream=True,
                                             messages=[{"role": "user", "content": "describe a dog"}]))
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
        assert text == old.last("/v1/chat/completions").answer_text() and events[-1].type == "message_stop"
        probes = [e for e in old.exchanges if e.path in WITHOUT_THE_APIS]
        assert len(probes) == 2  # each API asked about once, not per request


def test_the_clients_key_goes_upstream_as_it_came_unless_the_operator_set_one(
        smollm2_gguf: Path, relay: RecordingUpstream, tmp_path: Path) -> None:
    """Claude Code sends x-api-key, the anthropic SDK Authorization: Bearer; an upstream that speaks Messages gets
    either as it came, and --upstream-key replaces it."""
    ask = {"model": "target", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", home=tmp_path / "a") as open_proxy:
        for header, value in (("x-api-key", "sk-ant-client"), ("authorization", "Bearer sk-ant-oauth")):
            sent = httpx.post(f"{open_proxy.url}/v1/messages", json=ask, timeout=120,
                              headers={header: value, "X-BPO-Mode": "off", "anthropic-version": "2023-06-01"})
            forwarded = exchanges(relay, "/v1/messages")[-1].headers
            assert sent.status_code == 200 and forwarded[header] == value
            other = "authorization" if header == "x-api-key" else "x-api-key"
            assert other not in forwarded  # nothing made up
    with BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{relay.url}/v1", "--upstream-key", "sk-operator",
                         home=tmp_path / "b") as keyed:
        httpx.post(f"{keyed.url}/v1/messages", json=ask, timeout=120,
                   headers={"x-api-key": "sk-ant-client", "X-BPO-Mode": "off"}).raise_for_status()
        assert exchanges(relay, "/v1/messages")[-1].headers["x-api-key"] == "sk-operator"


def test_ollama_probes_when_bpo_answers_itself(smollm2_gguf: Path, tmp_path: Path) -> None:
    with BpoServer.start(smollm2_gguf, *BPO, home=tmp_path) as server:
        loaded = httpx.get(f"{server.url}/api/ps").json()["models"]
        assert [m["name"] for m in loaded] == [smollm2_gguf.name]
        refused = httpx.post(f"{server.url}/api/embed", json={"model": "bpo", "input": "hi"})
        assert refused.status_code == 400 and "no embeddings" in refused.json()["error"]
        reply = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0).messages.create(
            model="bpo", max_tokens=8192, messages=[{"role": "user", "content": "tell me a joke"}])  # a budget
        assert reply.content[0].text == "\n---\n".join(reply.model_extra["bpo"]["candidates"])  # as optimize prints


@pytest.mark.parametrize("arguments_in", ["deltas", "done"])
def test_a_responses_stream_is_read_back_whole_however_its_arguments_come(arguments_in: str) -> None:
    """What an upstream's Responses stream says, read back as pieces (a shown rewrite re-renders it): text, and a
    function call whose arguments come in pieces or only whole with their ``.done`` event."""
    from bpo_local import sse
    from bpo_local.serve.answer import End, TextPiece, ToolCallPiece
    from bpo_local.serve.dialects import RESPONSES

    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": ""}
    events = [("response.output_text.delta", {"output_index": 0, "delta": "Checking"}),
              ("response.output_item.added", {"output_index": 1, "item": call})]
    if arguments_in == "deltas":
        events += [("response.function_call_arguments.delta", {"output_index": 1, "delta": '{"city": '}),
                   ("response.function_call_arguments.delta", {"output_index": 1, "delta": '"Oslo"}'})]
    events += [("response.function_call_arguments.done", {"output_index": 1, "arguments": '{"city": "Oslo"}'}),
               ("response.completed",
                {"response": {"output": [call], "usage": {"input_tokens": 3, "output_tokens": 5}}})]
    stream = b"".join(sse.encode({"type": kind, **fields}, kind) for kind, fields in events)

    async def chunks():
        for at in range(0, len(stream), 7):  # cut anywhere
            yield stream[at:at + 7]

    async def read() -> list:
        return [piece async for piece in RESPONSES.read_stream(chunks())]

    pieces = asyncio.run(read())
    assert "".join(p.text for p in pieces if isinstance(p, TextPiece)) == "Checking"
    assert "".join(p.arguments for p in pieces if isinstance(p, ToolCallPiece)) == '{"city": "Oslo"}'
    assert [p.name for p in pieces if isinstance(p, ToolCallPiece) and p.name] == ["weather"]
    assert pieces[-1] == End("tool_calls", pieces[-1].usage) and pieces[-1].usage.output_tokens == 5
