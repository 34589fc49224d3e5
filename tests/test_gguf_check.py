"""A damaged GGUF is refused with one line before llama.cpp sees it; none crashes, hangs or leaks a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from _gguf_fuzz import KINDS, Layout, Mutation, counts, mutation, run

FUZZ_SEEDS = range(180)
"""Fixed, 15 of each kind of damage; benchmarks/fuzz_gguf.py runs 1000."""


@pytest.fixture(scope="session")
def layout(smollm2_gguf: Path) -> Layout:
    return Layout.of(smollm2_gguf)


def test_damaged_copies_fail_with_one_line_and_never_crash(smollm2_gguf: Path, layout: Layout,
                                                           tmp_path: Path) -> None:
    head = smollm2_gguf.read_bytes()[:layout.data_offset + 64]
    pristine = Mutation(-1, "none")
    mutations = [pristine, *(mutation(layout, seed, head) for seed in FUZZ_SEEDS)]
    assert {m.kind for m in mutations[1:]} == set(KINDS)
    outcomes = run(smollm2_gguf, mutations, tmp_path)
    assert outcomes[0].status == "ok", outcomes[0].detail
    assert [f"{o.status} {o.mutation}: {o.detail}" for o in outcomes if o.status not in ("ok", "error")] == []
    errors = [o for o in outcomes if o.status == "error"]
    assert [o.detail for o in errors if "\n" in o.detail or not o.detail.startswith("model file damaged.gguf ")] == []
    for o in outcomes:
        if o.mutation.kind == "dup_token":
            assert o.status == "error" and "repeats token" in o.detail, o
        if o.mutation.kind == "truncate" and o.mutation.truncate < layout.data_offset:
            assert o.status == "error", o
    found = counts(outcomes)
    assert found["error"] > 90 and found["ok"] > 8  # most damage is caught; some (a flipped letter) is harmless


def test_quantize_refuses_a_damaged_source_before_the_quantizer_runs(smollm2_gguf: Path, layout: Layout,
                                                                     tmp_path: Path) -> None:
    import shutil

    from bpo_local.errors import ConversionError
    from bpo_local.models.quantize import quantize

    head = smollm2_gguf.read_bytes()[:layout.data_offset + 64]
    dup = next(m for m in (mutation(layout, seed, head) for seed in FUZZ_SEEDS) if m.kind == "dup_token")
    src = tmp_path / "src.gguf"
    shutil.copyfile(smollm2_gguf, src)
    with open(src, "r+b") as f:
        for off, data in dup.patches:
            f.seek(off)
            f.write(data)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=r"^.*src.gguf is not a sound GGUF \(token \d+ repeats token \d+"):
        quantize(src, out, "q8_0")
    assert not out.exists()
