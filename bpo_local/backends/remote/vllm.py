"""vLLM's OpenAI-compatible server: BPO's requests as ``/v1/completions`` bodies, streamed.

One body per request, every value explicit (vLLM's defaults differ: ``max_tokens`` 16, ``top_k``
off, penalties from the model's generation config): token-id prompt (BOS included, from vLLM's own
``/tokenize``), ``n``, ``temperature``, ``top_k`` (-1 = off), ``top_p``, ``min_p`` 0, ``seed``,
``min_tokens`` (vLLM holds EOS and ``stop_token_ids`` back natively, as transformers' min-length
does), ``stop_token_ids`` (the newline), penalties neutral, ``skip_special_tokens``,
``return_token_ids``. vLLM samples temperature, then top-k, then top-p: transformers' order.
Differences: the n candidates come from vLLM's own per-request seeding (not seed+k); a one-token ban
is ``logit_bias`` -100 (vLLM's bound), multi-token bans are not sent; vLLM's ``/tokenize`` parses
special-token text, so a prompt whose text tokenizes to a control token is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ...backend import Capabilities, Completion, GenerationResult, Request, Timings, TokenEvent
from ...errors import ServerUnreachable, UsageError
from .endpoint import Emit, ServerFacts
from .http import Server

KIND = "vllm"
LOGIT_BIAS_MIN = -100

CAPABILITIES = Capabilities(
    multi_token_bans=False,
    notes=("min-length by min_tokens, newline by stop_token_ids (both native)",
           "n candidates by vLLM's n with its per-request seeding (not seed+k)",
           "one-token bans as logit_bias -100"),
)


def completion_body(request: Request, *, model: str, seed: int, eos_token: int) -> dict[str, Any]:
    """The ``/v1/completions`` body for ``request``: all n candidates in one request."""
    s = request.sampling
    singles = sorted({b[0] for b in request.banned if len(b) == 1})
    return {
        "model": model,
        "prompt": list(request.prompt),
        "max_tokens": request.max_new_tokens,
        "n": request.n,
        "temperature": s.temperature,
        "top_k": s.top_k if s.top_k > 0 else -1,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "seed": seed,
        "min_tokens": request.min_new_tokens,
        "stop_token_ids": sorted(set(request.stop_tokens) - {eos_token}),
        "stop": [],
        "ignore_eos": False,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "logit_bias": {str(t): LOGIT_BIAS_MIN for t in singles},
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
        "echo": False,
        "return_token_ids": True,
        "stream": True,
    }


class VllmEndpoint:
    """A vLLM server, probed once (``/version``, ``/v1/models``)."""

    capabilities = CAPABILITIES

    def __init__(self, server: Server, version: dict[str, Any]) -> None:
        self.server = server
        models = server.get("/v1/models")
        try:
            model = models["data"][0]
            name, n_ctx = str(model["id"]), int(model.get("max_model_len") or 0)
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServerUnreachable(f"{server.url}/v1/models lists no model") from None
        self._model = name
        self._bos = self._ids("", add_special_tokens=True)
        eos = self._ids("</s>", add_special_tokens=False)
        if len(eos) != 1:
            raise ServerUnreachable(f"{server.url}: cannot find the EOS token ('</s>' is {len(eos)} tokens): not a Llama-2 vocabulary")
        self._control = {*self._bos, eos[0]}
        self.facts = ServerFacts(kind=KIND, url=server.url, version=str(version.get("version", "unknown")), model=name,
                                 n_ctx=n_ctx, slots=None, chat_template=None, eos_token=eos[0])

    def _ids(self, text: str, *, add_special_tokens: bool) -> list[int]:
        reply = self.server.post("/tokenize", {"model": self._model, "prompt": text,
                                               "add_special_tokens": add_special_tokens})
        if not isinstance(reply, dict) or not isinstance(reply.get("tokens"), list):
            raise ServerUnreachable(f"{self.server.url}/tokenize sent a reply without 'tokens'")
        return [int(t) for t in reply["tokens"]]

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
        ids = self._ids(text, add_special_tokens=add_bos)
        body = ids[len(self._bos):] if add_bos and ids[:len(self._bos)] == self._bos else ids
        if not parse_special and self._control.intersection(body):
            raise UsageError("the prompt's text holds a special token (such as </s>) that vLLM's tokenizer "
                             "cannot keep as plain text")
        return ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        reply = self.server.post("/detokenize", {"model": self._model, "tokens": list(tokens)})
        if not isinstance(reply, dict) or "prompt" not in reply:
            raise ServerUnreachable(f"{self.server.url}/detokenize sent a reply without 'prompt'")
        return str(reply["prompt"])

    def token_for_piece(self, piece: str) -> int | None:
        ids = self._ids(piece, add_special_tokens=False)
        return next((t for t in reversed(ids) if self.detokenize([t]) == piece), None)

    def run(self, request: Request, seed: int, emit: Emit, cancelled: threading.Event) -> GenerationResult:
        start = time.perf_counter()
        first = 0.0
        tokens: list[list[int]] = [[] for _ in range(request.n)]
        texts: list[list[str]] = [[] for _ in range(request.n)]
        finish: list[str] = ["cancelled"] * request.n
        body = completion_body(request, model=self._model, seed=seed, eos_token=self.facts.eos_token)
        cached = 0
        for event in self.server.events("/v1/completions", body):
            if cancelled.is_set():
                break
            for choice in event.get("choices") or []:
                k = int(choice["index"])
                ids = [int(t) for t in choice.get("token_ids") or []]
                piece = str(choice.get("text", ""))
                for position, token in enumerate(ids or [None]):  # type: ignore[list-item]
                    shown = piece if position == 0 else ""
                    if token is not None:
                        tokens[k].append(token)
                    texts[k].append(shown)
                    if shown or token is not None:
                        first = first or time.perf_counter() - start
                        emit(TokenEvent(k, token if token is not None else -1, shown))
                if choice.get("finish_reason"):
                    finish[k] = "length" if choice["finish_reason"] == "length" else "stop"
            usage = event.get("usage") or {}
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or cached)
        total = time.perf_counter() - start
        completions = tuple(Completion(k, tuple(tokens[k]), "".join(texts[k]), finish[k])  # type: ignore[arg-type]
                            for k in range(request.n))
        return GenerationResult(completions, Timings(
            prompt_tokens=len(request.prompt), cached_prompt_tokens=cached, prompt_seconds=first,
            first_token_seconds=first, generated_tokens=sum(map(len, tokens)),
            decode_seconds=max(total - first, 0.0), total_seconds=total), seed)
