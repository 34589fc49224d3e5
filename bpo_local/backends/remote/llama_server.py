"""llama.cpp's ``llama-server``: BPO's requests as ``/completion`` bodies, streamed.

Each candidate k is one streamed ``/completion`` request with seed ``seed + k`` (the local engine's
seeding), a token-id prompt (BOS included, as ``/tokenize`` gave it) and every sampler setting
explicit: ``samplers: ["temperature", "top_k", "top_p"]`` (transformers' order), min_p 0, penalties,
DRY, XTC, typical-p and mirostat off, ``cache_prompt``. Stop tokens other than EOS are checked on the
client: the stream is closed at the first one (llama-server stops when its client leaves), so a stop
is a token id, exactly, never a string. A minimum length runs in two phases: phase 1 generates
exactly ``min_new_tokens`` with the stop tokens banned by ``logit_bias``; phase 2 continues from the
prompt plus phase 1's tokens on the same slot (its prompt cache) with the stops active and seed
``seed + k + 2**31`` (a fresh RNG stream: the same distribution, not the same draws as one pass).
One-token bans are ``logit_bias`` false; multi-token bans are not possible (capabilities say so).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...backend import Capabilities, Completion, GenerationResult, Request, Timings, TokenEvent
from ...errors import PromptTooLong, ServerRejected, ServerUnreachable, Unsupported
from .endpoint import Emit, ServerFacts
from .http import Server

KIND = "llama-server"
SAMPLERS = ("temperature", "top_k", "top_p")
PHASE2_SEED_OFFSET = 2**31

CAPABILITIES = Capabilities(
    multi_token_bans=False,
    notes=("sampler chain sent explicitly: temperature, top_k, top_p",
           "min-length in two phases: stop tokens banned by logit_bias for exactly min_new_tokens, then continued",
           "stop tokens checked by id on the client (the stream is closed at the first one)",
           "n candidates as n requests with seeds seed+k"),
)


def completion_body(request: Request, prompt: Sequence[int], *, seed: int, n_predict: int,
                    hold_stops: bool, slot: int | None = None) -> dict[str, Any]:
    """The ``/completion`` body of one phase of one candidate; ``hold_stops`` bans the stop tokens."""
    s = request.sampling
    banned = sorted({b[0] for b in request.banned if len(b) == 1} | (set(request.stop_tokens) if hold_stops else set()))
    body: dict[str, Any] = {
        "prompt": list(prompt),
        "n_predict": n_predict,
        "samplers": list(SAMPLERS) + (["min_p"] if s.min_p > 0 else []),
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "seed": seed,
        "repeat_penalty": 1.0, "repeat_last_n": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "dry_multiplier": 0.0, "xtc_probability": 0.0, "typical_p": 1.0, "top_n_sigma": -1.0, "mirostat": 0,
        "dynatemp_range": 0.0, "n_probs": 0, "min_keep": 0, "ignore_eos": False,
        "logit_bias": [[token, False] for token in banned],
        "cache_prompt": True,
        "return_tokens": True,
        "stream": True,
    }
    if slot is not None:
        body["id_slot"] = slot
    return body


class LlamaServerEndpoint:
    """A llama-server, probed once (``/props``)."""

    capabilities = CAPABILITIES

    def __init__(self, server: Server, props: dict[str, Any]) -> None:
        self.server = server
        try:
            settings = props["default_generation_settings"]
            eos = self._special_id(str(props["eos_token"]))
            self._bos = self._special_id(str(props["bos_token"])) if props.get("bos_token") else None
            self.facts = ServerFacts(
                kind=KIND, url=server.url, version=str(props.get("build_info", "unknown")),
                model=str(props.get("model_alias") or props.get("model_path") or "unknown"),
                n_ctx=int(settings["n_ctx"]), slots=int(props["total_slots"]),
                chat_template=props.get("chat_template"), eos_token=eos)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerUnreachable(f"{server.url}/props is not a llama-server's reply (no {exc})") from None

    def _special_id(self, text: str) -> int:
        ids = self.server.post("/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]
        if len(ids) != 1:
            raise ServerUnreachable(f"{self.server.url}: the special token {text!r} is not one token")
        return int(ids[0])

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
        """``text`` as the server's tokenizer splits it; with ``add_bos`` BOS comes first even where the
        model's own add_bos_token flag is off, as the local engine and the reference do."""
        reply = self.server.post("/tokenize", {"content": text, "add_special": False, "parse_special": parse_special})
        ids = [int(t) for t in _field(reply, "tokens", self.server, "/tokenize")]
        return [self._bos, *ids] if add_bos and self._bos is not None else ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(_field(self.server.post("/detokenize", {"tokens": list(tokens)}), "content", self.server, "/detokenize"))

    def token_for_piece(self, piece: str) -> int | None:
        reply = self.server.post("/tokenize", {"content": piece, "add_special": False, "parse_special": False,
                                               "with_pieces": True})
        return next((int(t["id"]) for t in _field(reply, "tokens", self.server, "/tokenize") if t["piece"] == piece), None)

    def run(self, request: Request, seed: int, emit: Emit, cancelled: threading.Event) -> GenerationResult:
        if self.facts.eos_token not in request.stop_tokens:
            raise Unsupported(f"{KIND} always stops at EOS; a request without EOS among its stop tokens cannot run there")
        if len(request.prompt) + 1 > self.facts.n_ctx:
            raise PromptTooLong(len(request.prompt), self.facts.n_ctx, where=f"each slot of {self.server.url}")
        start = time.perf_counter()
        first: list[float] = []

        def timed_emit(event: TokenEvent) -> None:
            if not first:
                first.append(time.perf_counter() - start)
            emit(event)

        if request.n == 1:
            outcomes = [self._candidate(request, 0, seed, timed_emit, cancelled)]
        else:
            with ThreadPoolExecutor(request.n) as pool:
                futures = [pool.submit(self._candidate, request, k, seed, timed_emit, cancelled) for k in range(request.n)]
                try:
                    outcomes = [f.result() for f in futures]
                except BaseException:
                    cancelled.set()  # one candidate failed: the request is retried whole
                    raise
        total = time.perf_counter() - start
        completions = tuple(c for c, _ in outcomes)
        timings = outcomes[0][1]
        generated = sum(len(c.tokens) for c in completions)
        first_token = first[0] if first else total
        return GenerationResult(completions, Timings(
            prompt_tokens=len(request.prompt), cached_prompt_tokens=int(timings.get("cache_n", 0)),
            prompt_seconds=float(timings["prompt_ms"]) / 1000 if "prompt_ms" in timings else first_token,
            first_token_seconds=first_token,
            generated_tokens=generated, decode_seconds=max(total - first_token, 0.0), total_seconds=total), seed)

    def _candidate(self, request: Request, index: int, seed: int, emit: Emit,
                   cancelled: threading.Event) -> tuple[Completion, dict[str, Any]]:
        """One candidate, in one or two phases; its Completion and the first phase's server timings."""
        seed_k = (seed + index) % 2**32
        held = min(request.min_new_tokens, request.max_new_tokens)
        tokens: list[int] = []
        text: list[str] = []
        body = completion_body(request, request.prompt, seed=seed_k, n_predict=held or request.max_new_tokens,
                               hold_stops=bool(held))
        finish, slot, timings = self._phase(body, request, index, tokens, text, emit, cancelled)
        if held and finish == "length" and len(tokens) < request.max_new_tokens:
            body = completion_body(request, (*request.prompt, *tokens), seed=(seed_k + PHASE2_SEED_OFFSET) % 2**32,
                                   n_predict=request.max_new_tokens - len(tokens), hold_stops=False, slot=slot)
            finish, _, _ = self._phase(body, request, index, tokens, text, emit, cancelled)
        return Completion(index, tuple(tokens), "".join(text), finish), timings  # type: ignore[arg-type]

    def _phase(self, body: dict[str, Any], request: Request, index: int, tokens: list[int], text: list[str],
               emit: Emit, cancelled: threading.Event) -> tuple[str, int | None, dict[str, Any]]:
        """Stream one phase into ``tokens``/``text``: its finish reason, slot and server timings."""
        stops = request.stop_tokens
        try:
            for event in self.server.events("/completion", body):
                if cancelled.is_set():
                    return "cancelled", None, {}
                ids = event.get("tokens") or []
                piece = str(event.get("content", ""))
                for position, token in enumerate(ids):
                    if token in stops:
                        return "stop", None, {}  # leaving closes the stream: the server stops too
                    tokens.append(int(token))
                    shown = piece if position == 0 else ""
                    text.append(shown)
                    emit(TokenEvent(index, int(token), shown))
                if event.get("stop"):
                    kind = event.get("stop_type")
                    finish = "length" if kind == "limit" else "stop"
                    return finish, event.get("id_slot"), event.get("timings") or {}
        except ServerRejected as exc:
            if "exceed" in str(exc) or "context" in str(exc):
                raise PromptTooLong(len(request.prompt), self.facts.n_ctx, detail=str(exc)) from None
            raise
        raise ServerUnreachable(f"{self.server.url}/completion ended its stream without a final event")


def _field(reply: Any, key: str, server: Server, path: str) -> Any:
    if not isinstance(reply, dict) or key not in reply:
        raise ServerUnreachable(f"{server.url}{path} sent a reply without {key!r}")
    return reply[key]
