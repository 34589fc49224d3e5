"""Test helpers for the converter: llama.cpp through its low-level bindings, and a numpy Llama.

The numpy model is an independent reference: it runs on the UNPERMUTED HF weights with HF's
rotate_half RoPE, so it checks the converter's q/k permutation rather than sharing it.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest


class LlamaCpp:
    """A GGUF loaded in llama.cpp (CPU, 1 thread): tokenize, full-sequence logits, greedy decode."""

    _quiet = None

    def __init__(self, path: Path, *, vocab_only: bool = False, n_ctx: int = 128) -> None:
        import llama_cpp as lc

        self.lc = lc
        if LlamaCpp._quiet is None:
            LlamaCpp._quiet = lc.llama_log_callback(lambda level, text, data: None)
            lc.llama_log_set(LlamaCpp._quiet, ctypes.c_void_p())
            lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.vocab_only = vocab_only
        params.n_gpu_layers = 0
        if not vocab_only:
            from bpo_local.backends.llamacpp import buffers

            buffers.apply("auto", params)  # the engine's default: no AMX weight buffers (they crash)
        self.model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.ctx = None
        if not vocab_only:
            cparams = lc.llama_context_default_params()
            cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
            cparams.n_threads = cparams.n_threads_batch = 1
            cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32 cache and no flash attention (whose CPU
            cparams.flash_attn_type = 0           # kernel rounds through F16): exact enough for logit checks
            self.ctx = lc.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                raise RuntimeError("llama.cpp could not create a context")

    def close(self) -> None:
        if self.ctx:
            self.lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lc.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self.lc.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode("utf-8")

    def n_vocab(self) -> int:
        return self.lc.llama_vocab_n_tokens(self.vocab)

    def token_text(self, token: int) -> bytes:
        return self.lc.llama_vocab_get_text(self.vocab, token)

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        out = (self.lc.llama_token * n_max)()
        n = self.lc.llama_tokenize(self.vocab, raw, len(raw), out, n_max, add_special, parse_special)
        assert n >= 0, "token buffer too small"
        return list(out[:n])

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits at every position of ``tokens`` evaluated from an empty cache: shape (T, vocab)."""
        lc = self.lc
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        batch = lc.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, t in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, True
                batch.seq_id[i][0] = 0
            assert lc.llama_decode(self.ctx, batch) == 0
            n = self.n_vocab()
            return np.array([np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, i), shape=(n,))
                             for i in range(len(tokens))])
        finally:
            lc.llama_batch_free(batch)

    def greedy(self, tokens: list[int], n: int) -> list[int]:
        """``n`` greedy tokens after ``tokens`` (re-evaluating the whole sequence: tiny models only)."""
        seq = list(tokens)
        for _ in range(n):
            seq.append(int(np.argmax(self.logits(seq)[-1])))
        return seq[len(tokens):]


def reference_logits(weights: dict[str, np.ndarray], config: dict, tokens: list[int]) -> np.ndarray:
    """HF Llama forward pass in float64 numpy: RMSNorm, rotate_half RoPE, GQA attention, SwiGLU."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    dim = config["hidden_size"] // n_head
    eps = config["rms_norm_eps"]
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    T = len(tokens)

    def rms(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    angles = np.arange(T)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rope(x: np.ndarray) -> np.ndarray:  # x: (T, heads, dim)
        half = dim // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos[:, None, :] + rotated * sin[:, None, :]

    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, n_head, dim))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, n_kv, dim))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, n_kv, dim)
        k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(dim) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", probs, v).reshape(T, n_head * dim)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


class FakeHub:
    """A Hugging Face Hub on 127.0.0.1 serving folders as model repos (the endpoints huggingface_hub uses).

    ``requests`` records every (method, path) served, so tests can see what was downloaded.
    """

    def __init__(self, repos: dict[str, Path], *, drop_after: dict[str, int] | None = None) -> None:
        """``drop_after``: file name -> bytes after which its first download's connection is dropped."""
        import hashlib
        import threading
        from http.server import ThreadingHTTPServer

        self.repos = {repo: (hashlib.sha1(repo.encode()).hexdigest(), folder) for repo, folder in repos.items()}
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[str] = []
        self.drop_after = dict(drop_after or {})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloaded(self) -> set[str]:
        """Files fetched with GET through /resolve/."""
        return {p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests
                if m == "GET" and "/resolve/" in p}

    def _handler(self):
        import hashlib
        import json
        import re
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import unquote, urlparse

        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    return self._info(m[1], body)
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
                    return self._tree(m[1], body)
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._file(m[1], m[3], body)
                self._send(404, b"{}", body, {"X-Error-Code": "EntryNotFound"})

            def _repo(self, repo: str, body: bool):
                if repo not in hub.repos:
                    self._send(404, b'{"error": "Repository not found"}', body,
                               {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                    return None
                return hub.repos[repo]

            def _files(self, folder: Path) -> list[Path]:
                return sorted(p for p in folder.rglob("*") if p.is_file())

            def _info(self, repo: str, body: bool) -> None:
                if (found := self._repo(repo, body)) is None:
                    return
                sha, folder = found
                info = {"_id": sha[:24], "id": repo, "modelId": repo, "sha": sha, "private": False,
                        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                        "siblings": [{"rfilename": p.relative_to(folder).as_posix()} for p in self._files(folder)]}
                self._send(200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})

            def _tree(self, repo: str, body: bool) -> None:
                if (found := self._repo(repo, body)) is None:
                    return
                _, folder = found
                entries = [{"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                            "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in self._files(folder)]
                self._send(200, json.dumps(entries).encode(), body, {"Content-Type": "application/json"})

            def _file(self, repo: str, name: str, body: bool) -> None:
                if (found := self._repo(repo, body)) is None:
                    return
                sha, folder = found
                file = folder / name
                if not file.is_file():
                    return self._send(404, b"{}", body, {"X-Error-Code": "EntryNotFound"})
                data = file.read_bytes()
                headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": sha,
                           "Content-Type": "application/octet-stream"}
                if body and name in hub.drop_after:
                    return self._drop(data, hub.drop_after.pop(name), headers)
                if body and (wanted := self.headers.get("Range")):
                    hub.ranges.append(wanted)
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._send(206, data[start:], body, headers)
                self._send(200, data, body, headers)

            def _drop(self, data: bytes, after: int, headers: dict[str, str]) -> None:
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data[:after])
                self.wfile.flush()
                self.close_connection = True

            def _send(self, status: int, data: bytes, body: bool, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler


def llama_cpp_sdist(cache: Path) -> Path:
    """The llama-cpp-python sdist (.tar.gz) of the installed version, downloaded once into ``cache``."""
    from importlib.metadata import version

    ver = version("llama_cpp_python")
    sdists = cache / "sdist"
    found = list(sdists.glob(f"llama_cpp_python-{ver}.tar.gz"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={ver}", "-d", str(sdists)], check=True)
        found = list(sdists.glob(f"llama_cpp_python-{ver}.tar.gz"))
    (sdist,) = found
    return sdist


def _extract(sdist: Path, folder: Path, wanted: Callable[[str], bool]) -> Path:
    """The members of the sdist under ``vendor/llama.cpp/`` that ``wanted(relative path)`` picks, extracted
    once into ``folder``; returns the extracted ``llama.cpp`` folder."""
    root = folder / "llama.cpp"
    if not root.is_dir():
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(prefix) and wanted(member.name[len(prefix):]):
                    target = partial / "llama.cpp" / member.name[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
        partial.replace(folder)
    return root


def llama_cpp_vocab_tests(cache: Path, name: str) -> tuple[Path, list[tuple[str, list[int]]]]:
    """llama.cpp's ``models/ggml-vocab-NAME.gguf`` and its tokenizer test cases (text, ids from HF's
    tokenizer), taken from the llama-cpp-python sdist of the installed version (cached)."""
    from importlib.metadata import version

    folder = cache / f"llama-cpp-vocabs-{version('llama_cpp_python')}"
    gguf_file = folder / f"ggml-vocab-{name}.gguf"
    if not gguf_file.with_suffix(".gguf.out").is_file():
        sdist = llama_cpp_sdist(cache)
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for suffix in (".gguf", ".gguf.inp", ".gguf.out"):
                member = tar.getmember(f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/models/"
                                       f"ggml-vocab-{name}{suffix}")
                data = tar.extractfile(member).read()
                partial = folder / f".{name}{suffix}.partial"
                partial.write_bytes(data)
                partial.replace(folder / f"ggml-vocab-{name}{suffix}")
    raw = gguf_file.with_suffix(".gguf.inp").read_text(encoding="utf-8")
    texts = raw.split("\n__ggml_vocab_test__\n")
    if raw.endswith("\n__ggml_vocab_test__\n"):
        texts.pop()  # the separator closes the last case too (test-tokenizer-0.cpp reads it so)
    outs = gguf_file.with_suffix(".gguf.out").read_text(encoding="utf-8").splitlines()
    return gguf_file, [(t, [int(i) for i in o.split()]) for t, o in zip(texts, outs, strict=True)]


LLAMA_CPP_CONVERTER_DEPS = ("transformers==4.57.6", "tokenizers>=0.22,<=0.23.0", "huggingface-hub>=0.34,<1.0",
                            "regex", "torch==2.13.0", "sympy>=1.13.3", "mpmath", "networkx>=2.5.1")
"""What llama.cpp's converter imports beyond our venv (transformers pinned as in its
requirements-convert_legacy_llama.txt; the hub and tokenizers versions that transformers accepts; torch,
which it imports at the top, and what torch needs beyond our venv: bpo-local itself no longer needs torch, so
it lives only in this cached folder)."""


def llama_cpp_converter(cache: Path) -> tuple[Path, dict[str, str]]:
    """llama.cpp's convert_hf_to_gguf.py from the sdist of the installed llama-cpp-python, and the
    environment to run it in (its own gguf-py; transformers in a folder of its own: both cached)."""
    from importlib.metadata import version

    ver = version("llama_cpp_python")
    root = _extract(llama_cpp_sdist(cache), cache / f"llama-cpp-converter-{ver}",
                    lambda path: path == "convert_hf_to_gguf.py" or path.startswith(("conversion/", "gguf-py/")))
    wanted = hashlib.sha256(" ".join(LLAMA_CPP_CONVERTER_DEPS).encode()).hexdigest()[:8]
    deps = cache / f"llama-cpp-converter-deps-{ver}-{wanted}"  # a new list of packages gets a new folder
    if not deps.is_dir():
        partial = deps.with_name(f".{deps.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(partial),
                        *LLAMA_CPP_CONVERTER_DEPS], check=True)
        partial.replace(deps)
    return root / "convert_hf_to_gguf.py", {"PYTHONPATH": str(deps)}


def llama_cpp_pre_tokenizer_table(cache: Path) -> tuple[str, dict[str, str]]:
    """The check text and checksum -> pre-tokenizer table of ``get_vocab_base_pre`` in the installed
    llama-cpp-python's llama.cpp (a later ``if chkhsh ==`` wins there, as in a dict)."""
    import ast
    import re

    converter, _ = llama_cpp_converter(cache)
    source = (converter.parent / "conversion" / "base.py").read_text(encoding="utf-8")
    body = source[source.index("# Marker: Start get_vocab_base_pre"):source.index("# Marker: End get_vocab_base_pre")]
    check_text = ast.literal_eval(re.search(r"chktxt = ('.*')\n", body)[1])
    rows = re.findall(r'if chkhsh == "([0-9a-f]{64})":\n\s+# ref: \S+\n\s+res = "([^"]+)"', body)
    assert len(rows) == body.count("if chkhsh =="), "llama.cpp changed the layout of get_vocab_base_pre"
    return check_text, dict(rows)


def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """For a generator fixture: a tmpfs of ``size`` (e.g. ``"6m"``) mounted at ``folder`` until the test
    ends; the test is skipped where mounting is not allowed (needs root)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def fill_disk_at(disk: Path, index: int = 3) -> Callable[[str, int, int], None]:
    """An ``on_tensor`` callback that, before tensor ``index`` is written, has another program take every
    byte left on ``disk`` (a small tmpfs): the convert runs out of space mid-write."""

    def fill(name: str, at: int, total: int) -> None:
        if at == index:
            with open(disk / "other-program.bin", "wb") as f:
                try:
                    f.write(b"\0" * (6 << 20))
                except OSError:
                    pass

    return fill
