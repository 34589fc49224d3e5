"""Tensors stored in the output type are copied file to file: in the kernel on one file system, by
reads and writes across two (a tmpfs), or straight to the disk (O_DIRECT) when the output is larger
than Linux leaves dirty without pacing the writer, with the same bytes every way and a full disk still named."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from _checkpoints import Checkpoint, build_bpe_tied
from _convert_helpers import fill_disk_at, mounted_tmpfs
from gguf import GGUFReader

from bpo_local.errors import ConversionError
from bpo_local.models.convert import convert_checkpoint, sink


@pytest.fixture(scope="module")
def f16_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return build_bpe_tied(tmp_path_factory.mktemp("copy") / "bpe_tied")


@pytest.fixture
def direct(monkeypatch):
    """Every output counts as larger than Linux leaves dirty unpaced: the O_DIRECT path is taken, with
    12 KiB buffers so that tensors and the header's end straddle many of them."""
    monkeypatch.setattr(sink, "throttle_free_bytes", lambda: 0)
    monkeypatch.setattr(sink, "_BUFFER_BYTES", 3 * 4096)


@pytest.fixture
def other_disk(tmp_path: Path):
    yield from mounted_tmpfs(tmp_path / "disk", "6m")


def test_f16_tensors_are_the_stored_bytes_on_one_file_system_and_across_two(f16_checkpoint, tmp_path, other_disk):
    same = convert_checkpoint(f16_checkpoint.path, tmp_path / "m.gguf", outtype="f16").path
    across = convert_checkpoint(f16_checkpoint.path, other_disk / "m.gguf", outtype="f16").path
    assert same.read_bytes() == across.read_bytes()
    tensors = {t.name: t for t in GGUFReader(same).tensors}
    for gguf_name, hf_name in (("token_embd.weight", "model.embed_tokens.weight"),
                               ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
                               ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight")):
        expected = f16_checkpoint.weights[hf_name].astype(np.float16)
        assert tensors[gguf_name].data.tobytes() == expected.tobytes(), gguf_name


def test_disk_filling_up_while_copying(f16_checkpoint, other_disk):
    with pytest.raises(ConversionError, match=r"^not enough disk space in .*disk: need ~"):
        convert_checkpoint(f16_checkpoint.path, other_disk / "m.gguf", outtype="f16", on_tensor=fill_disk_at(other_disk))
    assert [p.name for p in other_disk.iterdir()] == ["other-program.bin"]


def test_direct_writes_give_the_same_bytes(f16_checkpoint, tmp_path, direct):
    for outtype in ("f16", "f32"):  # stored bytes copied, and every tensor converted
        cached = tmp_path / f"cached-{outtype}.gguf"
        with pytest.MonkeyPatch.context() as undo:
            undo.setattr(sink, "throttle_free_bytes", lambda: float("inf"))
            assert convert_checkpoint(f16_checkpoint.path, cached, outtype=outtype).written.startswith(
                "through the page cache (")
        report = convert_checkpoint(f16_checkpoint.path, tmp_path / f"direct-{outtype}.gguf", outtype=outtype)
        assert report.written.startswith("with O_DIRECT (")
        assert report.path.read_bytes() == cached.read_bytes()
        assert report.size_bytes % 4096 != 0  # the unaligned tail went through the page cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cached-f16.gguf", "cached-f32.gguf", "direct-f16.gguf",
                                                          "direct-f32.gguf"]


def test_disk_filling_up_while_writing_directly(f16_checkpoint, other_disk, direct):
    with pytest.raises(ConversionError, match=r"^not enough disk space in .*disk: need ~"):
        convert_checkpoint(f16_checkpoint.path, other_disk / "m.gguf", outtype="f16", on_tensor=fill_disk_at(other_disk))
    assert [p.name for p in other_disk.iterdir()] == ["other-program.bin"]


def test_direct_writes_refused_by_the_file_system_go_through_the_page_cache(f16_checkpoint, tmp_path, direct,
                                                                             monkeypatch):
    """A file system that opens with O_DIRECT but refuses the writes (EINVAL), both writers refused at once."""
    cached = convert_checkpoint(f16_checkpoint.path, tmp_path / "cached.gguf", outtype="f16")
    together = threading.Barrier(2, timeout=2)
    pwrite = os.pwrite

    def refusing(fd: int, data, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()  # the two writers fail side by side
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(sink.os, "pwrite", refusing)
    report = convert_checkpoint(f16_checkpoint.path, tmp_path / "refused.gguf", outtype="f16")
    assert report.written == "through the page cache (this file system took O_DIRECT at open, then refused its writes)"
    assert report.path.read_bytes() == cached.path.read_bytes()
