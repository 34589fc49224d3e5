"""The proxy in a chat: what a remembered turn costs, and how many BPO generations a conversation makes.

Usage:
    python benchmarks/bench_proxy_turns.py                # ~1 min on SmolLM2-135M, 2 cores
    python benchmarks/bench_proxy_turns.py --rounds 60 --turns all

1. Remembered-turn overhead: a one-turn chat whose rewrite is in the store (1 new token), sent to
   `serve --upstream`, the same forwarded body straight to llama-server, and through serve with
   X-BPO-Mode: off, taking turns; median differences (target <= 5 ms over direct).
2. A scripted 10-turn chat (each request carries the whole history, as chat apps send it), with a
   retry of turn 5 and a tool round after turn 8; BPO generations counted from the run log (target: 1
   with the default --turns first), and how many earlier turns went upstream as their stored rewrite.
No asserts: numbers on a shared machine are noisy; compare runs on an idle one.
"""

from __future__ import annotations

import argparse
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


def remembered_overhead(direct: str, proxied: str, rounds: int) -> None:
    with httpx.Client(timeout=300) as client:
        for question in QUESTIONS:  # the first whose rewrite is not empty (an empty one is not kept)
            ask = {**ANSWER, "messages": [{"role": "user", "content": question}]}
            first = client.post(f"{proxied}/chat/completions", json=ask).json()["bpo"]  # generates once
            if first["optimized_prompt"]:
                break
        forwarded = {**ask, "messages": [{"role": "user", "content": first["optimized_prompt"]}], "max_tokens": 1}
        ask["max_tokens"] = 1
        times: dict[str, list[float]] = {"direct": [], "remembered": [], "off": []}
        for _ in range(rounds):
            for name, url, body, headers in (("direct", direct, forwarded, {}), ("remembered", proxied, ask, {}),
                                             ("off", proxied, forwarded, {"X-BPO-Mode": "off"})):
                start = time.perf_counter()
                reply = client.post(f"{url}/chat/completions", json=body, headers=headers)
                times[name].append(time.perf_counter() - start)
                reply.raise_for_status()
                assert name != "remembered" or reply.json()["bpo"]["turn"] == "remembered"
    d, r, o = (statistics.median(times[k]) for k in ("direct", "remembered", "off"))
    print(f"remembered turn: direct median {d * 1000:.1f} ms, through serve {r * 1000:.1f} ms: overhead "
          f"{(r - d) * 1000:.1f} ms over {rounds} (target <= 5 ms); the store's share (remembered - "
          f"X-BPO-Mode: off, same upstream body) {(r - o) * 1000:.1f} ms")


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
        remembered_overhead(f"{upstream.url}/v1", proxy.base_url, args.rounds)


if __name__ == "__main__":
    main()
