"""Seeded damage to a GGUF's header, loaded in child processes that report one outcome per file.

``Layout`` finds the header's fields with gguf-py (not with the reader under test); ``mutation(layout,
seed)`` damages one copy the same way every time; ``run(base, mutations)`` loads each damaged copy with
the library's Engine in a child process (many per child; a child that dies or hangs is blamed on the
file it was loading and replaced). Run as a script, this file is that child.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPECIAL_IDS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
               "tokenizer.ggml.padding_token_id")
KINDS = ("flip", "truncate", "length", "count", "type", "dup_token", "swap_lengths", "token_id", "hparam",
         "tensor", "token_type", "empty_token")


@dataclass(frozen=True)
class Layout:
    """Byte offsets of the fields a mutation aims at, in the base file."""

    size: int
    data_offset: int
    lengths: tuple[int, ...]
    """Every u64 string-length field: keys, string values, tokens, merges, tensor names."""
    counts: tuple[int, ...]
    """The header's tensor and KV counts and every array's element count (u64)."""
    types: tuple[int, ...]
    """Every value-type tag (u32), arrays' item types included."""
    tokens: tuple[tuple[int, int], ...]
    """(offset of the length field, length) of each vocabulary string."""
    scalars: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Key -> (offset, struct format) of each scalar value."""
    token_types: tuple[int, int] = (0, 0)
    """(offset, count) of the int32 token-type array."""
    tensors: tuple[tuple[int, int, int, int], ...] = ()
    """(n_dims offset, first dim offset, type offset, data-offset offset) of each tensor."""

    @classmethod
    def of(cls, path: Path) -> Layout:
        import numpy as np
        from gguf import GGUFReader, GGUFValueType

        reader = GGUFReader(path)
        base = reader.data.ctypes.data

        def at(part: np.ndarray) -> int:
            return part.ctypes.data - base

        lengths, counts, types, tokens, scalars = [], [at(reader.fields["GGUF.tensor_count"].parts[0]),
                                                        at(reader.fields["GGUF.kv_count"].parts[0])], [], [], {}
        token_types = (0, 0)
        for key, fld in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            parts = fld.parts
            lengths.append(at(parts[0]))
            types.append(at(parts[2]))
            if fld.types[0] == GGUFValueType.ARRAY:
                types.append(at(parts[3]))
                counts.append(at(parts[4]))
                if fld.types[1] == GGUFValueType.STRING:
                    strings = [(at(parts[i]), int(parts[i][0])) for i in range(5, len(parts), 2)]
                    lengths.extend(off for off, _ in strings)
                    if key == "tokenizer.ggml.tokens":
                        tokens = strings
                elif key == "tokenizer.ggml.token_type":
                    token_types = (at(parts[5]), len(parts) - 5)
            elif fld.types[0] == GGUFValueType.STRING:
                lengths.append(at(parts[3]))
            else:
                scalars[key] = (at(parts[3]), "<" + parts[3].dtype.char)
        tensors = []
        for tensor in reader.tensors:
            parts = tensor.field.parts
            lengths.append(at(parts[0]))
            tensors.append((at(parts[2]), at(parts[3]), at(parts[4]), at(parts[5])))
        return cls(path.stat().st_size, int(reader.tensors[0].data_offset), tuple(lengths), tuple(counts),
                   tuple(types), tuple(tokens), scalars, token_types, tuple(tensors))


@dataclass(frozen=True)
class Mutation:
    seed: int
    kind: str
    patches: tuple[tuple[int, bytes], ...] = ()
    truncate: int | None = None

    def __str__(self) -> str:
        what = f"truncated to {self.truncate}" if self.truncate is not None else \
            ", ".join(f"{len(data)} bytes at {off}" for off, data in self.patches)
        return f"seed {self.seed} ({self.kind}: {what})"


def _u64(rng: random.Random, old: int, size: int) -> int:
    return rng.choice([0, 1, old + 1, max(old - 1, 0), old * 2 + 7, size, size - old, 2**31, 2**32 + old,
                       2**63 - 1, 2**63, 2**64 - 1, rng.randrange(2**64), rng.randrange(1 << 20)])


def mutation(layout: Layout, seed: int, base: bytes) -> Mutation:
    """The damage of ``seed``: always the same for the same base file. ``base``: its header bytes."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    u32 = lambda off: struct.unpack_from("<I", base, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("<Q", base, off)[0]  # noqa: E731
    if kind == "flip":
        n = rng.choice([1, 1, 2, 4, 16])
        spots = [rng.randrange(0, 24) if rng.random() < 0.1 else rng.randrange(layout.data_offset)
                 for _ in range(n)]
        return Mutation(seed, kind, tuple((off, bytes([rng.randrange(256)])) for off in spots))
    if kind == "truncate":
        where = rng.randrange(layout.data_offset + 64) if rng.random() < 0.8 else rng.randrange(layout.size)
        return Mutation(seed, kind, truncate=where)
    if kind in ("length", "count"):
        off = rng.choice(layout.lengths if kind == "length" else layout.counts)
        return Mutation(seed, kind, ((off, struct.pack("<Q", _u64(rng, u64(off), layout.size))),))
    if kind == "type":
        off = rng.choice(layout.types)
        return Mutation(seed, kind, ((off, struct.pack("<I", rng.choice([*range(16), 2**31, 2**32 - 1]))),))
    if kind == "dup_token":
        by_length: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(layout.tokens):
            by_length.setdefault(n, []).append(i)
        group = rng.choice([g for g in by_length.values() if len(g) > 1])
        src, dst = rng.sample(group, 2)
        (src_off, n), (dst_off, _) = layout.tokens[src], layout.tokens[dst]
        return Mutation(seed, kind, ((dst_off + 8, base[src_off + 8:src_off + 8 + n]),))
    if kind == "swap_lengths":
        i = rng.randrange(len(layout.tokens) - 1)
        (a_off, a), (b_off, b) = layout.tokens[i], layout.tokens[i + 1]
        text = base[a_off + 8:a_off + 8 + a] + base[b_off + 8:b_off + 8 + b]
        cut = rng.randrange(len(text) + 1)
        return Mutation(seed, kind, ((a_off, struct.pack("<Q", cut) + text[:cut] + struct.pack("<Q", len(text) - cut)
                                      + text[cut:]),))
    if kind == "token_id":
        key = rng.choice([k for k in SPECIAL_IDS if k in layout.scalars])
        n_vocab = len(layout.tokens)
        value = rng.choice([n_vocab, n_vocab + 1, n_vocab + rng.randrange(1000), 2**31 - 1, 2**31, 2**32 - 1])
        return Mutation(seed, kind, ((layout.scalars[key][0], struct.pack("<I", value)),))
    if kind == "hparam":
        key = rng.choice([k for k in layout.scalars if not k.startswith(("tokenizer.", "general."))])
        off, fmt = layout.scalars[key]
        if fmt == "<f":
            value = struct.pack("<f", rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30]))
        else:
            value = struct.pack(fmt, rng.choice([0, 1, 2, 3, 7, 2**16, 2**31 - 1, 2**31, 2**32 - 1]))
        return Mutation(seed, kind, ((off, value),))
    if kind == "tensor":
        n_dims_off, dim_off, type_off, data_off = rng.choice(layout.tensors)
        target = rng.choice(["n_dims", "dim", "type", "offset"])
        if target == "n_dims":
            return Mutation(seed, kind, ((n_dims_off, struct.pack("<I", rng.choice([0, 1, 3, 4, 5, 2**32 - 1]))),))
        if target == "dim":
            return Mutation(seed, kind, ((dim_off + 8 * rng.randrange(u32(n_dims_off)),
                                          struct.pack("<Q", _u64(rng, u64(dim_off), layout.size))),))
        if target == "type":
            return Mutation(seed, kind, ((type_off, struct.pack("<I", rng.choice([*range(45), 2**31]))),))
        old = u64(data_off)
        value = rng.choice([old + 1, old + 32, old - 32 if old >= 32 else 1, layout.size, 2**63, 2**64 - 32])
        return Mutation(seed, kind, ((data_off, struct.pack("<Q", value)),))
    if kind == "token_type":
        start, count = layout.token_types
        spots = rng.sample(range(count), rng.choice([1, 5, 100]))
        return Mutation(seed, kind, tuple((start + 4 * i, struct.pack("<i", rng.choice([-1, 0, 3, 6, 7, 2**31 - 1])))
                                          for i in spots))
    # empty_token: a vocabulary string of length 0 (the rest of the header shifts into the next ones)
    off, _ = rng.choice(layout.tokens)
    return Mutation(seed, kind, ((off, struct.pack("<Q", 0)),))


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    status: str
    """ok, error (a one-line BpoLocalError), traceback (any other exception), signal, hang."""
    detail: str = ""


def run(base: Path, mutations: Sequence[Mutation], workdir: Path, *, timeout: float = 60.0) -> list[Outcome]:
    """Load each mutation of ``base`` in a child process; one Outcome each, in order."""
    work = workdir / "damaged.gguf"
    shutil.copyfile(base, work)
    pristine = base.read_bytes() if base.stat().st_size < (256 << 20) else None
    outcomes: list[Outcome] = []
    todo = list(mutations)
    while todo:
        with _Child(workdir) as child:
            while todo:
                m = todo[0]
                _apply(work, m)
                try:
                    outcome = child.load(work, m, timeout)
                finally:
                    _restore(work, m, base, pristine)
                outcomes.append(outcome)
                todo.pop(0)
                if outcome.status in ("signal", "hang"):
                    break
    return outcomes


def _apply(work: Path, m: Mutation) -> None:
    with open(work, "r+b") as f:
        if m.truncate is not None:
            f.truncate(m.truncate)
        for off, data in m.patches:
            f.seek(off)
            f.write(data)


def _restore(work: Path, m: Mutation, base: Path, pristine: bytes | None) -> None:
    with open(work, "r+b") as f, open(base, "rb") as src:
        spans = [(m.truncate, None)] if m.truncate is not None else [(off, len(data)) for off, data in m.patches]
        for off, n in spans:
            if pristine is not None:
                chunk = pristine[off:] if n is None else pristine[off:off + n]
            else:
                src.seek(off)
                chunk = src.read() if n is None else src.read(n)
            f.seek(off)
            f.write(chunk)


class _Child:
    """``python _gguf_fuzz.py FD``: reads paths on stdin, writes one JSON outcome per line on FD."""

    def __init__(self, workdir: Path) -> None:
        self._stderr = open(workdir / "child-output.txt", "w+b")  # noqa: SIM115
        read, write = os.pipe()
        env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
        self._proc = subprocess.Popen([sys.executable, __file__, str(write)], stdin=subprocess.PIPE,
                                      stdout=self._stderr, stderr=self._stderr, env=env, pass_fds=(write,),
                                      cwd=Path(__file__).resolve().parent.parent)
        os.close(write)
        self._answers = os.fdopen(read, "rb")

    def load(self, path: Path, m: Mutation, timeout: float) -> Outcome:
        proc = self._proc
        assert proc.stdin
        self._stderr.seek(0)
        self._stderr.truncate()
        proc.stdin.write(f"{path}\n".encode())
        proc.stdin.flush()
        ready, _, _ = select.select([self._answers], [], [], timeout)
        line = self._answers.readline() if ready else b""
        if not ready:
            proc.kill()
            proc.wait()
            return Outcome(m, "hang", f"no answer in {timeout:.0f} s")
        if not line:
            code = proc.wait()
            self._stderr.seek(0)
            said = self._stderr.read().decode("utf-8", "replace").strip()
            name = signal.Signals(-code).name if code < 0 else f"exit {code}"
            return Outcome(m, "signal", f"{name}: {said[:300]}")
        status, detail = json.loads(line)
        return Outcome(m, status, detail)

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()
        self._answers.close()


def _child(fd: int) -> None:
    import traceback

    sys.path.insert(0, os.getcwd())
    from bpo_local.backends.llamacpp import Engine
    from bpo_local.errors import BpoLocalError

    answers = os.fdopen(fd, "w")
    for line in sys.stdin:
        try:
            with Engine(line.strip(), n_ctx=64, n_threads=1) as engine:
                engine.logits([engine.bos_token or 0, 1, 2])
            answer = ["ok", ""]
        except BpoLocalError as err:
            answer = ["error", str(err)]
        except Exception:  # noqa: BLE001 - the finding to report
            answer = ["traceback", traceback.format_exc()]
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    found = {s: 0 for s in ("ok", "error", "traceback", "signal", "hang")}
    for o in outcomes:
        found[o.status] += 1
    return found


if __name__ == "__main__":
    _child(int(sys.argv[1]))
