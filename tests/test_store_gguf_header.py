"""The fast GGUF header reader agrees with gguf-py's full reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpo_local.gguf_header import read_header


def test_header_matches_gguf_py_on_a_real_model(smollm2_gguf: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(smollm2_gguf)
    header = read_header(smollm2_gguf)
    assert header.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["general.file_type"] == reader.get_field("general.file_type").contents()
    assert "tokenizer.ggml.tokens" not in header.metadata  # arrays are skipped


@pytest.mark.parametrize("content", [b"", b"GGML" + bytes(40), b"GGUF\x03\x00\x00\x00" + bytes(5)])
def test_not_a_gguf_or_truncated_is_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_header(path)
