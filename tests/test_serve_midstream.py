"""A stream that fails after it began is never passed off as a whole answer: the upstream dying mid-answer, or
saying so in its own error event, ends the client's stream in its API's own error event, which each official
client raises (Responses: ``response.failed``), with a message naming the cause; the proxy logs a warning and
no traceback.

The chain: clients -> proxy A (``--show-rewrite``: it reads its upstream's stream and renders it anew) -> proxy B
(passes its upstream's bytes on) -> a real llama-server, SIGKILLed once every stream has text. B ends each stream
it passes on with its API's error event for the cut; A reads those events, B's own, and ends its streams with its
own. BPO in both proxies is SmolLM2.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
from _llama_server import LlamaServer
from _serve_helpers import BpoServer

BPO = ("--ctx", "1024", "--seed", "1", "--max-tokens", "24", "--mode", "aggressive")
STORY = "Write a very long story about a lighthouse keeper and her cat, in many chapters."
STORY_TURN = [{"role": "user", "content": STORY}]
LONG = 3000
OFF = {"X-BPO-Mode": "off"}
SHOW = {"X-BPO-Show-Rewrite": "true"}
ENDLESS = {"ignore_eos": True}  # llama-server's own field (chat, text and Responses bodies): no early end


class Watched(threading.Thread):
    """One client's stream, read in a thread: its text, its last item, and what it raised."""

    def __init__(self, items: Callable[[], Iterable[Any]], text_of: Callable[[Any], str], after: str = "") -> None:
        super().__init__(daemon=True)
        self._items, self._text_of, self._after = items, text_of, after
        self.text, self.last, self.error = "", None, None
        self.answering = threading.Event()
        """Set once the upstream's answer has begun (after ``after``, BPO's block, where one is shown)."""

    def run(self) -> None:
        try:
            for item in self._items():
                self.last = item
                self.text += self._text_of(item)
                if self.text.partition(self._after)[2] if self._after else self.text:
                    self.answering.set()
        except Exception as exc:  # what the client raised is the outcome under test
            self.error = exc
        finally:
            self.answering.set()


def chat_text(chunk: Any) -> str:
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


def event_text(event: Any) -> str:
    return event.delta if event.type == "response.output_text.delta" else ""


def message_text(event: Any) -> str:
    return event.delta.text if event.type == "content_block_delta" and event.delta.type == "text_delta" else ""


def openai_client(server: BpoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)


def chat(server: BpoServer, headers: dict[str, str]) -> Iterable[Any]:
    return openai_client(server).chat.completions.create(model="t", messages=STORY_TURN, stream=True, max_tokens=LONG,
                                                         extra_headers=headers, extra_body=ENDLESS)


def responses(server: BpoServer, headers: dict[str, str]) -> Iterable[Any]:
    return openai_client(server).responses.create(model="t", input=STORY, stream=True, max_output_tokens=LONG,
                                                  extra_headers=headers, extra_body=ENDLESS)


def messages(server: BpoServer, headers: dict[str, str]) -> Iterable[Any]:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    return client.messages.create(model="t", messages=STORY_TURN, stream=True, max_tokens=LONG, extra_headers=headers)


def streams_through(a: BpoServer, b: BpoServer) -> tuple[dict[str, Watched], dict[str, Watched]]:
    """The streams through A (its rewrite shown; Ollama's translated to chat completions) and straight to B."""
    through_a = {
        "chat": Watched(lambda: chat(a, SHOW), chat_text, "</details>"),
        "responses": Watched(lambda: responses(a, SHOW), event_text, "</details>"),
        "messages": Watched(lambda: messages(a, SHOW), message_text, "</details>"),
        "ollama": Watched(lambda: ollama.Client(host=a.url).chat(model="t", messages=STORY_TURN, stream=True,
                                                                 options={"num_predict": LONG}),
                          lambda part: part.message.content or ""),
    }
    to_b = {
        "chat": Watched(lambda: chat(b, OFF), chat_text),
        "text": Watched(lambda: openai_client(b).completions.create(model="t", prompt=STORY, stream=True,
                                                                     max_tokens=LONG, extra_body=ENDLESS),
                        lambda chunk: chunk.choices[0].text if chunk.choices else ""),
        "responses": Watched(lambda: responses(b, OFF), event_text),
        "messages": Watched(lambda: messages(b, OFF), message_text),
    }
    return through_a, to_b


def started(streams: Iterable[Watched]) -> None:
    """Start ``streams`` and wait until each has the upstream's text."""
    streams = list(streams)
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.answering.wait(120) and stream.error is None, (stream.text, stream.error)


def test_an_upstream_dying_mid_answer_ends_every_stream_in_its_apis_error_event(smollm2_gguf: Path,
                                                                                  tmp_path: Path) -> None:
    with LlamaServer.start(smollm2_gguf, slots=8, ctx=8 * 4096, log_dir=tmp_path) as llm, \
            BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{llm.url}/v1", home=tmp_path / "b") as b, \
            BpoServer.start(smollm2_gguf, *BPO, "--upstream", f"{b.base_url}", home=tmp_path / "a") as a:
        through_a, to_b = streams_through(a, b)
        started(through_a.values())  # first: their rewrites take a while; the rest then start together
        started(to_b.values())
        llm.kill()
        for stream in (*through_a.values(), *to_b.values()):
            stream.join(60)
            assert not stream.is_alive()
        logs = {"A": a.log.read_text(), "B": b.log.read_text()}

    cut = "dropped the connection"  # B's words for the cut; A says B's stream failed midway, with them
    for name in ("chat", "text"):
        assert isinstance(to_b[name].error, openai.APIError) and cut in str(to_b[name].error), to_b[name].error
    assert isinstance(through_a["chat"].error, openai.APIError)
    assert "upstream failed midway" in str(through_a["chat"].error) and cut in str(through_a["chat"].error)
    for stream, words in ((to_b["messages"], cut), (through_a["messages"], "upstream failed midway")):
        assert isinstance(stream.error, anthropic.APIStatusError) and words in str(stream.error), stream.error
        assert cut in str(stream.error)
    for stream, words in ((to_b["responses"], cut), (through_a["responses"], "upstream failed midway")):
        assert stream.error is None and stream.last.type == "response.failed", (stream.error, stream.last)
        assert words in stream.last.response.error.message and cut in stream.last.response.error.message
    shown = through_a["responses"].last.response.output[0].content[0].text
    assert shown.startswith("<details><summary>BPO's rewrite") and shown == through_a["responses"].text
    error = through_a["ollama"].error
    assert isinstance(error, ollama.ResponseError) and "upstream failed midway" in str(error), error
    assert logs["B"].count("a stream already answering failed") == 8  # its four and A's four
    assert logs["A"].count("a stream already answering failed") == 4
    assert "Traceback" not in logs["A"] + logs["B"]


def test_a_stream_still_answering_when_the_grace_ends_ends_in_shutting_down(smollm2_gguf: Path, llama_server,
                                                                            tmp_path: Path) -> None:
    """SIGTERM while the upstream's answers stream (a completion passed on as it comes, a response rendered anew
    under BPO's block): past the grace each ends in its API's error event saying the server is shutting down; exit 0."""
    with BpoServer.start(smollm2_gguf, *BPO, "--grace", "1", "--upstream", f"{llama_server.url}/v1",
                         home=tmp_path) as proxy:
        text = openai_client(proxy).completions  # passed on by the proxy's catch-all route
        streams = {"text": Watched(lambda: text.create(model="t", prompt=STORY, stream=True, max_tokens=LONG,
                                                       extra_body=ENDLESS), lambda chunk: chunk.choices[0].text),
                   "responses": Watched(lambda: responses(proxy, SHOW), event_text, "</details>")}
        started(streams.values())
        proxy.process.send_signal(signal.SIGTERM)
        for stream in streams.values():
            stream.join(30)
        assert proxy.process.wait(30) == 0
    error = streams["text"].error
    assert isinstance(error, openai.APIError) and "shutting down" in str(error), error
    failed = streams["responses"].last
    assert failed.type == "response.failed" and "shutting down" in failed.response.error.message, failed
    assert "Traceback" not in proxy.log.read_text()
