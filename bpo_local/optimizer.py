"""The optimizer: presets (presets.py: BPO's modes, PAS, MePO, the user's) served by a token-level backend.

The backend is anything that implements ``backend.Backend``; the local llama.cpp engine is one. This module owns
the mapping from a preset to an engine request and from the engine's completions to optimized prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .backend import Backend, Generation, GenerationResult, ModelInfo, Request, RequestDone, Sampling, Timings
from .errors import BpoLocalError, InvalidSetting, Unsupported, UsageError
from .presets import Overrides, Preset, bans_follow_cuts, final_prompt, postprocess
from .prompt_tokens import prompt_tokens

CANDIDATE_SEPARATOR = "---"
"""The line between candidates when several are shown as one text (the CLI's output, serve's answer)."""
SKIPPED_BANS = ("banned sequences not applied (this backend cannot ban multi-token sequences; each can only "
                "follow a cut marker, so the candidates are unchanged, while raw may hold text BPO would have banned)")


@dataclass(frozen=True)
class CandidateDelta:
    """New text for candidate ``index`` as it streams (raw, before post-processing)."""

    index: int
    text: str


def format_candidates(candidates: Sequence[str]) -> str:
    """Candidates as one text, a ``---`` line between them: how a result reads as plain text."""
    return f"\n{CANDIDATE_SEPARATOR}\n".join(candidates)


@dataclass(frozen=True)
class OptimizeResult:
    """One optimization: the user's prompt and BPO's candidate rewrites (one in stable mode)."""

    prompt: str
    mode: str
    candidates: tuple[str, ...]
    finish_reasons: tuple[str, ...]
    params: Mapping[str, Any]
    model: str
    timings: Timings
    seed: int
    raw: tuple[str, ...] = field(default=(), repr=False)
    """The decoded generations before post-processing."""
    adaptations: tuple[str, ...] = ()
    """How this backend reached BPO's semantics by other means than the reference (empty: none)."""

    @property
    def text(self) -> str:
        """The first (in stable mode, the only) optimized prompt."""
        return self.candidates[0]

    @property
    def cancelled(self) -> bool:
        return "cancelled" in self.finish_reasons

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: prompt, result(s), mode, parameters, model and timings."""
        t = self.timings
        return {
            "prompt": self.prompt,
            "optimized_prompt": self.text,
            "candidates": list(self.candidates),
            "mode": self.mode,
            "params": dict(self.params),
            "model": self.model,
            "finish_reasons": list(self.finish_reasons),
            **({"adaptations": list(self.adaptations)} if self.adaptations else {}),
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "cached_prompt_tokens": t.cached_prompt_tokens,
                "generated_tokens": t.generated_tokens,
                "prompt_seconds": round(t.prompt_seconds, 4),
                "first_token_seconds": round(t.first_token_seconds, 4),
                "decode_seconds": round(t.decode_seconds, 4),
                "total_seconds": round(t.total_seconds, 4),
                "tokens_per_second": round(t.tokens_per_second, 2),
                **({"threads": {c.phase: {"threads": c.threads, "why": c.why} for c in t.threads}} if t.threads else {}),
            },
        }


class OptimizeStream:
    """Iterate for ``CandidateDelta``s; ``result`` is the ``OptimizeResult`` once done or cancelled.
    ``preset`` is the preset it runs (overrides applied), e.g. to post-process partial text."""

    def __init__(self, generation: Generation, preset: Preset, finish: Any) -> None:
        self._generation = generation
        self.preset = preset
        self._finish = finish
        self._result: OptimizeResult | None = None

    def __iter__(self) -> Iterator[CandidateDelta]:
        for event in self._generation:
            if event.text:
                yield CandidateDelta(event.index, event.text)

    def cancel(self) -> None:
        """Stop generating; the text produced so far is kept, marked cancelled."""
        self._generation.cancel()

    @property
    def result(self) -> OptimizeResult:
        if self._result is None:
            self._result = self._finish(self._generation.result)
        return self._result


class Optimizer:
    """BPO on one loaded model. Create with ``bpo_local.load``; reuse for many prompts."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._sha256: str | None = None
        self._plans: dict[Preset, tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]] = {}
        self._stops: dict[Preset, frozenset[int]] = {}

    @functools.cached_property
    def presets(self) -> Mapping[str, Preset]:
        """Every preset a name may pick here: built-in, the model's own (from its GGUF), the user's TOML files."""
        from .preset_files import known_presets

        return MappingProxyType(known_presets(self.info.metadata))

    @functools.cached_property
    def _build_presets(self) -> tuple[str | None, dict[str, Preset]]:
        from .preset_files import build_presets

        return build_presets(self.info.metadata)

    def preset_names(self) -> list[str]:
        """The names ``preset`` takes: built-in, the model's own, the user's TOML files (looked up on each call,
        so a file added later counts, and a broken one fails only when picked)."""
        from .preset_files import preset_names

        return preset_names(self._build_presets[1])

    @property
    def default_preset(self) -> str:
        """The preset the model's build names (``bpo.preset.default``), else BPO's stable mode."""
        return self._build_presets[0] or "stable"

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @functools.cached_property
    def _newline(self) -> int | None:
        """The newline token, looked up on first use: only presets that stop on it need it, and on a
        SentencePiece vocabulary the lookup scans every token."""
        return self.backend.token_for_piece("\n")

    def model_sha256(self) -> str | None:
        """sha256 of the model file (cached across runs by path, size and mtime); None when the backend
        serves a model without a local file (a server)."""
        if self._sha256 is None and self.info.path is not None:
            from .models.digest import file_sha256

            self._sha256 = file_sha256(self.info.path)
        return self._sha256

    def preset(self, mode: str | None = None, **overrides: Any) -> Preset:
        """The preset named ``mode`` (None: the model's default) with overrides (``Overrides``' fields: n,
        temperature, top_p, top_k, max_tokens) applied and checked; None values keep the preset's."""
        from .preset_files import find_preset

        chosen = find_preset(mode or self.default_preset, self._build_presets[1])
        try:
            checked = Overrides(**overrides)
        except TypeError:
            unknown = sorted(set(overrides) - set(Overrides.__dataclass_fields__))
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(Overrides.__dataclass_fields__)}") from None
        return chosen.with_overrides(checked)

    def stream(self, prompt: str, *, mode: str | None = None, seed: int | None = None, **overrides: Any) -> OptimizeStream:
        """Start optimizing ``prompt``; iterate the stream for text as it is generated."""
        if not prompt.strip():
            raise UsageError("empty prompt; pass the prompt as an argument or on stdin")
        preset = self.preset(mode, seed=seed, **overrides)
        request = self.request_for(prompt, preset, seed)
        return OptimizeStream(self.backend.generate(request), preset,
                              lambda result: self.result_for(prompt, preset, result))

    def optimize(self, prompt: str, *, mode: str | None = None, seed: int | None = None, **overrides: Any) -> OptimizeResult:
        """Optimize ``prompt`` and return the finished result."""
        stream = self.stream(prompt, mode=mode, seed=seed, **overrides)
        for _ in stream:
            pass
        return stream.result

    def optimize_many(self, prompts: Iterable[str], *, parallel: int = 4, mode: str | None = None,
                      seed: int | None = None, **overrides: Any) -> Generator[OptimizeResult | BpoLocalError, None, None]:
        """Optimize ``prompts`` with up to ``parallel`` of them in flight, decoded together.

        Yields one item per prompt in input order, as soon as it and every earlier one are done: its
        OptimizeResult, or the error that kept that prompt alone from being optimized (empty, longer
        than the context); the others go on. ``parallel=1`` optimizes one prompt after another.
        Closing the iterator (or Ctrl-C) cancels the prompts in flight; the engine stays usable.
        """
        if parallel < 1:
            raise InvalidSetting("parallel", parallel)
        preset = self.preset(mode, seed=seed, **overrides)
        return self._optimize_many(prompts, preset, seed, parallel)

    def _optimize_many(self, prompts: Iterable[str], preset: Preset, seed: int | None,
                       parallel: int) -> Generator[OptimizeResult | BpoLocalError, None, None]:
        done: dict[int, OptimizeResult | BpoLocalError] = {}  # by input position, until emitted in order
        texts: list[str] = []
        sent: list[int] = []  # the input position of each request handed to the backend
        self._plan(preset)  # a refusal (Unsupported) is raised here, before any prompt runs

        def requests() -> Iterator[Request]:
            for prompt in prompts:
                texts.append(prompt)
                if prompt.strip():
                    sent.append(len(texts) - 1)
                    yield self.request_for(prompt, preset, seed)
                else:
                    done[len(texts) - 1] = UsageError("empty prompt; give every input a non-empty prompt")

        emitted = 0

        def ready() -> Iterator[OptimizeResult | BpoLocalError]:
            """The finished items next in input order."""
            nonlocal emitted
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

        batch = self.backend.generate_many(requests(), max_sequences=parallel * preset.n)
        try:
            for event in batch:
                if isinstance(event, RequestDone):
                    at = sent[event.index]
                    done[at] = event.error or self.result_for(texts[at], preset, event.result)  # type: ignore[arg-type]
                yield from ready()
        finally:
            batch.cancel()
        yield from ready()  # empty prompts after the last request

    def result_for(self, prompt: str, preset: Preset, result: GenerationResult) -> OptimizeResult:
        """The OptimizeResult of a finished backend result for ``prompt`` under ``preset``."""
        raw = tuple(c.text for c in result.completions)
        return OptimizeResult(
            prompt=prompt,
            mode=preset.name,
            candidates=tuple(final_prompt(prompt, postprocess(text, preset), preset) for text in raw),
            finish_reasons=tuple(c.finish_reason for c in result.completions),
            params=MappingProxyType(_params(preset, result.seed)),
            model=self.info.name,
            timings=result.timings,
            seed=result.seed,
            raw=raw,
            adaptations=self._plan(preset)[1],
        )

    def adaptations(self, mode: str = "stable", **overrides: Any) -> tuple[str, ...]:
        """How this backend will run ``mode`` differently from the reference but with the same
        candidates (empty: exactly as the reference); ``Unsupported`` naming the setting when it cannot."""
        return self._plan(self.preset(mode, **overrides))[1]

    def _plan(self, preset: Preset) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
        """The bans to send for ``preset`` and the adaptations that carries, worked out once per preset."""
        if preset not in self._plans:
            adaptations = self._adaptations(preset)
            banned = tuple(tuple(self.backend.tokenize(s, add_bos=False)) for s in preset.banned_strings)
            self._plans[preset] = tuple(b for b in banned if len(b) == 1 or not adaptations), adaptations
        return self._plans[preset]

    def _adaptations(self, preset: Preset) -> tuple[str, ...]:
        """How the backend will run ``preset`` differently from the reference but with the same
        candidates; Unsupported naming the setting when it cannot."""
        caps = self.backend.capabilities
        where = self.info.backend
        sampled = preset.temperature > 0 and (preset.top_k > 0 or preset.top_p < 1)
        problems = (
            (not caps.token_prompts, "token-id prompts (BPO's template must be evaluated as tokenized)"),
            (preset.n > 1 and not caps.n_candidates, f"n={preset.n} candidates per prompt"),
            (sampled and not caps.sampler_order,
             f"temperature {preset.temperature:g} before top_k {preset.top_k} and top_p {preset.top_p:g}"),
            (preset.min_new_tokens_extra is not None and not caps.min_new_tokens,
             f"the {preset.name} mode's minimum length"),
        )
        for bad, setting in problems:
            if bad:
                raise Unsupported(f"{where} cannot reproduce {setting}")
        if not preset.banned_strings or caps.multi_token_bans:
            return ()
        if not bans_follow_cuts(preset, lambda s: self.backend.tokenize(s, add_bos=False), self.backend.detokenize):
            raise Unsupported(f"{where} cannot ban the multi-token sequences of the {preset.name} mode")
        return (SKIPPED_BANS,)

    def request_for(self, prompt: str, preset: Preset, seed: int | None) -> Request:
        """The backend request for ``prompt`` under ``preset`` (bans as ``_plan`` adapts them); with
        ``result_for``, what a caller driving ``backend.generate_many`` itself needs (the HTTP server)."""
        banned = self._plan(preset)[0]
        tokenize = self.backend.tokenize
        min_new = 0
        if preset.min_new_tokens_extra is not None:
            # The reference's min_length is len(prompt ids) + len(user prompt ids, BOS included) + 5.
            min_new = len(tokenize(prompt, add_bos=True)) + preset.min_new_tokens_extra
        return Request(
            prompt=prompt_tokens(self.backend, prompt, preset),
            max_new_tokens=preset.max_new_tokens,
            sampling=Sampling(temperature=preset.temperature, top_p=preset.top_p, top_k=preset.top_k, seed=seed),
            n=preset.n,
            stop_tokens=self._stop_tokens(preset),
            min_new_tokens=min_new,
            banned=banned,
        )

    def _stop_tokens(self, preset: Preset) -> frozenset[int]:
        """EOS, the newline token where the preset stops on it, and its stop tokens this vocabulary has."""
        if preset not in self._stops:
            stops = {self.backend.eos_token}
            if preset.stop_on_newline and self._newline is not None:
                stops.add(self._newline)
            for text in preset.stop_tokens:
                ids = self.backend.tokenize(text, add_bos=False, parse_special=True)
                if len(ids) == 1:
                    stops.add(ids[0])
            self._stops[preset] = frozenset(stops)
        return self._stops[preset]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Optimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _params(preset: Preset, seed: int) -> dict[str, Any]:
    return {
        "n": preset.n,
        "temperature": preset.temperature,
        "top_p": preset.top_p,
        "top_k": preset.top_k,
        "max_tokens": preset.max_new_tokens,
        "seed": seed,
    }

