"""How far a quantized build drifts from its F16 reference, measured on BPO's own task.

Each pair is teacher-forced: BOS + the BPO template around the user prompt, then the reference optimized
prompt. Only the optimized-prompt positions are compared: KL(reference || build) per token (mean and
99th percentile), how often both pick the same top token, and the task perplexity of each.

The reference pass runs first and keeps its logits on disk (one file per pair, float32), so only one
model is in memory at a time and one sequence's logits at a time. Storing the raw logits (not
log-probabilities) makes a build compared with itself come out at exactly zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..preset_files import builds_own_preset
from ..prompt_tokens import prompt_tokens

if TYPE_CHECKING:
    import numpy as np

    from ..backends.llamacpp import Engine

DEFAULT_DATA = "bpo_eval.jsonl"
"""Shipped in ``bpo_local/data``: 32 pairs of BPO's test split (see its README)."""

MAX_CTX = 2048
"""Context for the reference pass; pairs longer than this (or than the model's) are left out."""

OnProgress = Callable[[int, int], None]
"""``on_progress(done, total)`` after each pair."""


@dataclass(frozen=True)
class EvalPair:
    prompt: str
    optimized_prompt: str


@dataclass(frozen=True)
class VerifyResult:
    """A build against its reference over ``tokens`` optimized-prompt tokens of ``sequences`` pairs."""

    reference: str
    sequences: int
    tokens: int
    kl_mean: float
    kl_p99: float
    kl_max: float
    same_top: float
    """Fraction of positions where both models' most likely token is the same."""
    ppl: float
    ppl_reference: float

    @property
    def ppl_ratio(self) -> float:
        return self.ppl / self.ppl_reference

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``verification`` record."""
        return {**asdict(self), "ppl_ratio": self.ppl_ratio}


def load_pairs(path: Path | None = None) -> list[EvalPair]:
    """The shipped eval set, or ``path``: a JSON list or JSONL of objects with prompt/optimized_prompt."""
    if path is None:
        text = resources.files("bpo_local").joinpath("data", DEFAULT_DATA).read_text(encoding="utf-8")
        where = DEFAULT_DATA
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read eval data {path}: {exc}; pass a JSON or JSONL file") from exc
        where = str(path)
    try:
        stripped = text.lstrip()
        records = json.loads(text) if stripped.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
        pairs = [EvalPair(str(r["prompt"]), str(r["optimized_prompt"])) for r in records]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{where} is not a JSON list or JSONL of objects with prompt and optimized_prompt "
                         f"({type(exc).__name__}: {exc})") from exc
    if not pairs:
        raise UsageError(f"{where} holds no pairs; give it at least one prompt/optimized_prompt object")
    return pairs


@dataclass(frozen=True)
class _Sequence:
    tokens: tuple[int, ...]
    start: int
    """Index of the first optimized-prompt token."""


class Reference:
    """The reference model's logits over every pair's optimized-prompt positions, kept in ``directory``."""

    def __init__(self, name: str, sequences: Sequence[_Sequence], directory: Path, n_vocab: int) -> None:
        self.name = name
        self.sequences = tuple(sequences)
        self.directory = directory
        self.n_vocab = n_vocab

    @property
    def n_ctx(self) -> int:
        return max(len(s.tokens) for s in self.sequences)

    def logits(self, i: int) -> np.ndarray:
        import numpy as np

        return np.load(self.directory / f"ref-{i}.npy", mmap_mode="r")

    @classmethod
    def compute(cls, path: Path, pairs: Sequence[EvalPair], directory: Path, *, name: str | None = None,
                threads: int | None = None, gpu_layers: int | None = None,
                on_progress: OnProgress | None = None) -> Reference:
        """Tokenize the pairs with the reference model and store its logits; pairs longer than its
        context are left out."""
        import numpy as np

        with _open(path, n_ctx=MAX_CTX, threads=threads, gpu_layers=gpu_layers) as engine:
            sequences = [s for s in (_tokenize(engine, p) for p in pairs)
                         if s.start < len(s.tokens) <= engine.info.n_ctx]
            if not sequences:
                raise UsageError(f"no eval pair fits the context of {path.name} ({engine.info.n_ctx} tokens)")
            n_vocab = 0
            for i, seq in enumerate(sequences):
                rows = _target_rows(engine.logits(seq.tokens), seq)
                n_vocab = rows.shape[1]
                np.save(directory / f"ref-{i}.npy", np.ascontiguousarray(rows, dtype=np.float32))
                if on_progress:
                    on_progress(i + 1, len(sequences))
        return cls(name or path.name, sequences, directory, n_vocab)


def compare(path: Path, reference: Reference, *, threads: int | None = None, gpu_layers: int | None = None,
            on_progress: OnProgress | None = None) -> VerifyResult:
    """Teacher-force the reference's token sequences through ``path`` and measure the drift."""
    import numpy as np

    kls: list[np.ndarray] = []
    same = nll = nll_ref = 0.0
    with _open(path, n_ctx=reference.n_ctx, threads=threads, gpu_layers=gpu_layers) as engine:
        for i, seq in enumerate(reference.sequences):
            rows = _target_rows(engine.logits(seq.tokens), seq)
            ref_rows = reference.logits(i)
            if rows.shape[1] != reference.n_vocab:
                raise UsageError(f"{path.name} has {rows.shape[1]} tokens in its vocabulary but the reference "
                                 f"{reference.name} has {reference.n_vocab}; compare builds of the same model")
            targets = np.asarray(seq.tokens[seq.start:])
            lp, lp_ref = _log_softmax(rows), _log_softmax(ref_rows)
            kls.append(np.sum(np.exp(lp_ref) * (lp_ref - lp), axis=1))
            same += float(np.sum(np.argmax(rows, axis=1) == np.argmax(ref_rows, axis=1)))
            picked = np.arange(len(targets))
            nll -= float(np.sum(lp[picked, targets]))
            nll_ref -= float(np.sum(lp_ref[picked, targets]))
            if on_progress:
                on_progress(i + 1, len(reference.sequences))
    kl = np.maximum(np.concatenate(kls), 0.0)  # rounding can dip a hair below zero
    n = len(kl)
    return VerifyResult(
        reference=reference.name, sequences=len(reference.sequences), tokens=n,
        kl_mean=float(kl.mean()), kl_p99=float(np.percentile(kl, 99)), kl_max=float(kl.max()),
        same_top=same / n, ppl=math.exp(nll / n), ppl_reference=math.exp(nll_ref / n),
    )


def _open(path: Path, *, n_ctx: int | None, threads: int | None, gpu_layers: int | None) -> Engine:
    from ..backends.llamacpp import Engine

    return Engine(path, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=gpu_layers)


def _tokenize(engine: Engine, pair: EvalPair) -> _Sequence:
    """The pair's prompt wrapped as the build's own preset wraps it (BPO's template unless the build names
    another, such as PAS's chat turn), followed by the optimized prompt as the target."""
    prompt = prompt_tokens(engine, pair.prompt, builds_own_preset(engine.info.metadata))
    target = engine.tokenize(pair.optimized_prompt, add_bos=False)
    return _Sequence((*prompt, *target), len(prompt))


def _target_rows(logits: np.ndarray, seq: _Sequence) -> np.ndarray:
    """The rows that predict the optimized-prompt tokens (row i predicts token i + 1)."""
    return logits[seq.start - 1 : len(seq.tokens) - 1]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
