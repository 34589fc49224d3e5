"""llama.cpp's quantizer behind bpo_local.models.quantize: real GGUFs in, real GGUFs out."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpo_local.errors import ConversionError, UsageError
from bpo_local.models.quantize import QUANTS, parse_quants, quantize


def test_parse_quants_is_case_insensitive_and_keeps_order() -> None:
    assert parse_quants("Q4_K_M, q8_0,Q4_K_M") == ("q4_k_m", "q8_0")


def test_parse_quants_names_the_bad_one_and_the_choices() -> None:
    with pytest.raises(UsageError) as err:
        parse_quants("q8_0,q3")
    assert str(err.value).startswith("unknown quant 'q3'; choose from: f32, f16")
    assert err.value.exit_code == 2


def test_quantize_writes_a_smaller_gguf_and_reports_progress(smollm2_f16: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = quantize(smollm2_f16, tmp_path / "q4_0.gguf", "q4_0", threads=2,
                      on_tensor=lambda name, i, total: seen.append((i, total)))
    assert report.path.read_bytes()[:4] == b"GGUF"
    assert report.size_bytes < smollm2_f16.stat().st_size / 2
    assert report.bits_per_weight is not None and 4 < report.bits_per_weight < 7
    total = seen[-1][1]
    assert [i for i, _ in seen] == list(range(1, total + 1))


def test_a_failed_quantize_is_one_line_and_leaves_no_file(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError) as err:  # Q4_1 input: llama.cpp refuses to requantize
        quantize(smollm2_gguf, out, "q4_0", threads=1)
    assert "requantizing" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_every_listed_quant_maps_to_a_distinct_llama_cpp_file_type() -> None:
    from bpo_local.models._quantize_worker import _ftype

    assert len({_ftype(q) for q in QUANTS}) == len(QUANTS)
