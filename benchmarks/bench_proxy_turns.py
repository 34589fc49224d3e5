"""The proxy in a chat: what a remembered turn costs, and how many BPO generations a conversation makes.

Usage:
    python benchmarks/bench_proxy_turns.py                # ~1 min on SmolLM2-135M, 2 cores
    python benchmarks/bench_proxy_turns.py --rounds 60 --turns all

1. Remembered-turn overhead, in each API serve speaks (OpenAI chat, Responses, Anthropic Messages, Ollama):
   a one-turn request whose rewrite is in the store (1 new token) sent to `serve --upstream`, and the same
   forwarded request straight to llama-server, taking turns; median differences (target <= 5 ms over direct).
2. A scripted 10-turn chat (each request carries the whole history, as chat apps send it), with a
   retry of turn 5 and a tool round after turn 8; BPO generations counted from the run log (target: 1
   with the default --turns first), and how many earlier turns went upstream as their stored rewrite.
3. Open WebUI's request pattern for a 3-turn chat (each turn streamed with tools, then its follow-up
   suggestions; title and tags after the first): BPO generations (target 1) and the wall time serve adds.
No asserts: numbers on a shared machine are noisy; compare runs on an idle one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _llama_server import LlamaServer  # noqa: E402
from _serve_helpers import BpoServer  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache" / "bpo-local-tests" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ANSWER = {"model": "target", "max_tokens": 4, "temperature": 0, "seed": 0}
QUESTIONS = ("Write a haiku about tea.", "tell me a joke", "name three rivers", "help me with taxes")
FOLLOW_UPS = ("make it shorter", "now in French", "add an example", "why?", "give me another", "explain step 2",
              "and the opposite?", "summarise", "thanks, one more")


def _chat(q: str) -> dict:
    return {**ANSWER, "max_tokens": 1, "messages": [{"role": "user", "content": q}]}


def _responses(q: str) -> dict:
    return {"model": "target", "input": q, "max_output_tokens": 1, "temperature": 0}


def _messages(q: str) -> dict:
    return {"model": "target", "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": q}]}


def _ollama(q: str) -> dict:
    return {"model": "target", "stream": False, "options": {"num_predict": 1, "temperature": 0},
            "messages": [{"role": "user", "content": q}]}


DIALECTS = {  # name: (serve's route, its body for a question, llama-server's route, its body for the rewrite)
    "chat": ("/v1/chat/completions", _chat, "/v1/chat/completions", _chat),
    "responses": ("/v1/responses", _responses, "/v1/responses", _responses),
    "messages": ("/v1/messages", _messages, "/v1/messages", _messages),
    "ollama": ("/api/chat", _ollama, "/v1/chat/completions", _chat),
}
"""Each API's remembered turn through serve, and the same forwarded request straight to llama-server."""


def remembered_overhead(direct: str, proxy: str, rounds: int) -> None:
    with httpx.Client(timeout=300) as client:
        for question in QUESTIONS:  # the first whose rewrite is not empty (an empty one is not kept)
            first = client.post(f"{proxy}/v1/chat/completions", json=DIALECTS["chat"][1](question)).json()["bpo"]
            if first["optimized_prompt"]:
                break
        rewrite = first["optimized_prompt"]
        for name, (path, ask, direct_path, forwarded) in DIALECTS.items():
            times: dict[str, list[float]] = {"direct": [], "remembered": []}
            for _ in range(rounds):
                for kind, url, body in (("direct", direct + direct_path, forwarded(rewrite)),
                                        ("remembered", proxy + path, ask(question))):
                    start = time.perf_counter()
                    reply = client.post(url, json=body)
                    times[kind].append(time.perf_counter() - start)
                    reply.raise_for_status()
                    assert kind == "direct" or reply.headers["x-bpo-turn"] == "remembered", reply.headers
            d, r = (statistics.median(times[k]) for k in ("direct", "remembered"))
            print(f"remembered turn, {name:9s}: direct median {d * 1000:.1f} ms, through serve {r * 1000:.1f} ms: "
                  f"overhead {(r - d) * 1000:.1f} ms over {rounds} (target <= 5 ms)")


def send(url: str, body: bytes) -> None:
    """One request on a connection of its own, as each of Open WebUI's requests may be (llama-server closes a
    kept-alive connection after a stream, which a second request on it would meet)."""
    httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=600).raise_for_status()


def open_webui_chat(direct: str, proxy: str, server: BpoServer) -> None:
    """Open WebUI's request pattern for a 3-turn chat: each person's turn streamed with tools, then its
    follow-up suggestions; after the first, the title and tags. BPO generations, and the time all of it takes
    through serve over the same requests straight to the upstream."""
    from _app_requests import OPEN_WEBUI_FOLLOW_UP, OPEN_WEBUI_TAGS, OPEN_WEBUI_TITLE, open_webui_task, open_webui_turn

    before = len(server.logged(timeout=1))
    totals = {}
    for name, base in (("warm-up", direct), ("serve", proxy), ("direct", direct)):  # both timed on warm caches
        chat: list[dict] = []
        start = time.perf_counter()
        for turn, text in enumerate(("Plan a week of vegetarian dinners.", "make it cheaper", "add desserts")):
            chat.append({"role": "user", "content": text})
            send(f"{base}/v1/chat/completions", open_webui_turn(chat))
            chat.append({"role": "assistant", "content": "(answer)"})
            for template in (OPEN_WEBUI_TITLE, OPEN_WEBUI_TAGS, OPEN_WEBUI_FOLLOW_UP)[0 if turn == 0 else 2:]:
                task = json.loads(open_webui_task(template, chat))
                send(f"{base}/v1/chat/completions", json.dumps({**task, "max_tokens": 8}).encode())
        totals[name] = time.perf_counter() - start
    generated = len(server.logged(timeout=5)) - before
    print(f"Open WebUI, 3-turn chat (3 turns, 5 tasks): {generated} BPO generation(s) (target 1); "
          f"{totals['serve']:.2f} s through serve vs {totals['direct']:.2f} s direct: "
          f"{totals['serve'] - totals['direct']:+.2f} s added")


def ten_turn_chat(proxied: str, server: BpoServer) -> None:
    messages: list[dict] = [{"role": "user", "content": "Plan a three-day trip to Lisbon."}]
    turns = []
    with httpx.Client(timeout=300) as client:
        def send() -> dict:
            reply = client.post(f"{proxied}/chat/completions", json={**ANSWER, "messages": messages}).json()
            turns.append(f'{reply["bpo"]["turn"]} ({reply["bpo"]["history_rewritten"]} earlier rewritten)')
            return reply["choices"][0]["message"]

        for i, follow_up in enumerate(("", *FOLLOW_UPS)):
            if follow_up:
                messages.append({"role": "user", "content": follow_up})
            answer = send()
            if i == 4:
                answer = send()  # a retry / regenerate
            messages.append({"role": "assistant", "content": answer.get("content") or ""})
            if i == 7:  # a tool round
                messages[-1] = {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}
                messages.append({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
                messages.append({"role": "assistant", "content": send().get("content") or ""})
    generated = len(server.logged(timeout=5))
    print(f"10-turn chat ({len(turns)} requests): {generated} BPO generation(s) (target 1 with --turns first); "
          f"turns: {', '.join(turns)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--turns", choices=("first", "all"), default="first")
    parser.add_argument("--mode", choices=("stable", "aggressive"), default="aggressive",
                        help="BPO's mode (default aggressive: its minimum length keeps SmolLM2's rewrites non-empty)")
    args = parser.parse_args()
    home = Path("/tmp") / f"bench-proxy-turns-{time.monotonic_ns()}"
    with LlamaServer.start(args.model, slots=1, threads=1, ctx=4096) as upstream, \
            BpoServer.start(args.model, "--ctx", "1024", "--max-tokens", "64", "--turns", args.turns,
                            "--mode", args.mode, "--upstream", f"{upstream.url}/v1", home=home) as proxy:
        ten_turn_chat(proxy.base_url, proxy)
        remembered_overhead(upstream.url, proxy.url, args.rounds)
        open_webui_chat(upstream.url, proxy.url, proxy)


if __name__ == "__main__":
    main()
