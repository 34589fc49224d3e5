"""The llama-server test fixture is a real llama.cpp server: it tokenizes, completes and dies when killed."""

from __future__ import annotations

import httpx
import pytest
from _llama_server import LlamaServer


def test_it_serves_tokenize_and_completion(llama_server: LlamaServer) -> None:
    tokens = httpx.post(f"{llama_server.url}/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    body = {"prompt": tokens, "n_predict": 4, "temperature": 0, "cache_prompt": False}
    reply = httpx.post(f"{llama_server.url}/completion", json=body, timeout=60).json()
    assert reply["tokens_predicted"] >= 1


def test_a_killed_server_refuses_connections(smollm2_gguf, tmp_path) -> None:
    server = LlamaServer.start(smollm2_gguf, slots=1, log_dir=tmp_path)
    server.kill()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)
