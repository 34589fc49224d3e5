"""PyTorch ``.bin`` checkpoints, read without torch: same GGUF as safetensors, hostile pickles refused."""

from __future__ import annotations

import builtins
import os
import pickle
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import _torch_zip as torch_zip
import numpy as np
import pytest
from _checkpoints import (
    TORCH_STORAGES,
    encoded,
    llama2_tokenizer_files,
    llama_config,
    random_llama,
    stored,
    write_json,
    write_sharded,
)

from bpo_local.errors import ConversionError
from bpo_local.models.convert import convert_checkpoint
from bpo_local.models.convert.reader_torch import read_torch

SHARD = "pytorch_model-00002-of-00002.bin"


def _build(folder: Path, tokenizer: Path, dtype: str, fmt: str) -> Path:
    """The same tiny Llama-2 (seeded weights in ``dtype``) as 2 shards of ``fmt``."""
    folder.mkdir(parents=True)
    write_sharded(folder, stored(random_llama(32000, seed=5), dtype), dtype, fmt=fmt, shards=2)
    write_json(folder, "config.json", llama_config(32000))
    llama2_tokenizer_files(folder, tokenizer, pad=False)
    return folder


@pytest.fixture(scope="session")
def bin_checkpoint(tmp_path_factory: pytest.TempPathFactory, llama2_tokenizer: Path) -> Path:
    return _build(tmp_path_factory.mktemp("bin") / "ck", llama2_tokenizer, "f16", "torch")


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
def test_bin_converts_to_the_same_f16_gguf_as_safetensors(dtype, tmp_path, llama2_tokenizer):
    bin_src = _build(tmp_path / "bin" / "tiny", llama2_tokenizer, dtype, "torch")  # one name: general.name
    st_src = _build(tmp_path / "st" / "tiny", llama2_tokenizer, dtype, "safetensors")
    assert sorted(p.name for p in bin_src.glob("*.bin")) == ["pytorch_model-00001-of-00002.bin", SHARD]
    from_bin = convert_checkpoint(bin_src, tmp_path / "bin.gguf", outtype="f16").path.read_bytes()
    from_st = convert_checkpoint(st_src, tmp_path / "st.gguf", outtype="f16").path.read_bytes()
    assert len(from_bin) > 8_000_000 and from_bin == from_st


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_views_offsets_and_shared_storages_read_as_torch_would(byteorder, tmp_path):
    w = np.arange(24, dtype=np.float32).reshape(4, 6) / 7
    whole = torch_zip.tensor(w, "FloatStorage")
    halves = torch_zip.tensor(encoded(w, "f16"), "HalfStorage")
    state = {
        "whole": whole,
        "transposed": torch_zip.Tensor(whole.storage, 0, (6, 4), (1, 6)),
        "rows_1_2": torch_zip.Tensor(whole.storage, 6, (2, 6), (6, 1)),
        "every_other_column": torch_zip.Tensor(halves.storage, 1, (4, 3), (6, 2)),
        "bf16": torch_zip.tensor(encoded(w, "bf16"), "BFloat16Storage"),
        "f64": torch_zip.tensor(w.astype(np.float64), "DoubleStorage"),
        "empty": torch_zip.tensor(np.zeros((0, 3), np.float32), "FloatStorage"),
    }
    file = tmp_path / "weights.bin"
    torch_zip.save(file, state, byteorder=byteorder, archive="archive")
    tensors = {t.name: t for t in read_torch(file)}
    assert list(tensors) == list(state)
    expected = {"whole": w, "transposed": w.T, "rows_1_2": w[1:3], "every_other_column": stored({"": w}, "f16")[""][:, 1::2],
                "bf16": stored({"": w}, "bf16")[""], "f64": w, "empty": np.zeros((0, 3), np.float32)}
    for name, want in expected.items():
        got = tensors[name].load()
        assert tensors[name].shape == want.shape and got.flags.c_contiguous, name
        assert got.dtype == (np.float16 if name == "every_other_column" else np.float32), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert {n: t.dtype for n, t in tensors.items()} == {
        "whole": "F32", "transposed": "F32", "rows_1_2": "F32", "every_other_column": "F16", "bf16": "BF16",
        "f64": "F64", "empty": "F32"}


def test_tensors_larger_than_a_copy_chunk_read_whole(tmp_path):
    """Big tensors are copied (and their pages handed back) 16 MiB at a time: every chunk must land."""
    values = np.random.default_rng(0).standard_normal(9_000_003).astype(np.float32)
    f32 = torch_zip.tensor(values, "FloatStorage")
    state = {"f32_from_3": torch_zip.Tensor(f32.storage, 3, (3, 3_000_000), (3_000_000, 1)),
             "bf16": torch_zip.tensor(encoded(values, "bf16"), "BFloat16Storage")}
    torch_zip.save(tmp_path / "big.bin", state)
    tensors = {t.name: t.load() for t in read_torch(tmp_path / "big.bin")}
    np.testing.assert_array_equal(tensors["f32_from_3"], values[3:].reshape(3, -1))
    np.testing.assert_array_equal(tensors["bf16"], stored({"": values}, "bf16")[""])


# ---- hostile and broken files: refused with one clear line, and nothing of them runs --------------

@dataclass(frozen=True)
class Payload:
    """Pickles as a call of ``func(*args)``, the way a hostile checkpoint runs code on load."""

    func: object
    args: tuple

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, (f"touch {marker}",)),
        "builtins.eval": Payload(builtins.eval, (touch,)),
        "subprocess.run": Payload(subprocess.run, (["touch", str(marker)],)),
        "nested": {"config": [1, {"deep": (2.0, Payload(builtins.exec, (touch,)))}]},
    }


GLOBALS = {"os.system": "posix.system", "builtins.eval": "builtins.eval", "subprocess.run": "subprocess.run",
           "nested": "builtins.exec"}


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(src, dst)
    return dst


def _refused(src: Path, tmp_path: Path, match: str) -> None:
    with pytest.raises(ConversionError, match=match) as err:
        convert_checkpoint(src, tmp_path / "out" / "m.gguf")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def _tensors(file: Path) -> dict[str, torch_zip.Tensor]:
    """The shard's weights again, as writer tensors (to re-save them beside something else)."""
    return {t.name: torch_zip.tensor(t.load(), TORCH_STORAGES["f16"]) for t in read_torch(file)}


@pytest.mark.parametrize("kind", list(GLOBALS))
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(kind, bin_checkpoint, tmp_path):
    marker = tmp_path / "ran"
    payload = _payloads(marker)[kind]
    pickle.loads(pickle.dumps(payload))  # the payload is live: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()

    src = _copy(bin_checkpoint, tmp_path)
    torch_zip.save(src / SHARD, {**_tensors(src / SHARD), "hostile": payload})
    _refused(src, tmp_path, rf"^refused {SHARD}: its pickle asks for {GLOBALS[kind]}, which a state dict of "
                            r"tensors never needs \(nothing of it was run\)$")
    assert not marker.exists()


def test_the_cli_refuses_a_hostile_checkpoint_on_one_line(run_cli, bin_checkpoint, tmp_path):
    marker = tmp_path / "ran"
    src = _copy(bin_checkpoint, tmp_path)
    torch_zip.save(src / SHARD, {**_tensors(src / SHARD), "x": Payload(os.system, (f"touch {marker}",))})
    done = run_cli("convert", str(src))
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr == f"error: refused {SHARD}: its pickle asks for posix.system, which a state dict of " \
                          "tensors never needs (nothing of it was run)\n"
    assert not marker.exists()


def test_legacy_torch_format_is_refused_with_what_to_do(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    with open(src / SHARD, "wb") as f:  # how torch.save(..., _use_new_zipfile_serialization=False) starts
        for record in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(record, f, protocol=2)
    _refused(src, tmp_path, rf"^{SHARD} is in PyTorch's legacy \(pre-1\.6\) format, which is not read; re-save it "
                            r"with a recent torch \(torch\.save\) or use safetensors$")


def _rewrite(file: Path, change: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_STORED) -> None:
    """Rewrite a .bin archive, replacing some records (named without the archive prefix)."""
    with zipfile.ZipFile(file) as zf:
        records = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with zipfile.ZipFile(file, "w", compression) as zf:
        for name, data in records:
            zf.writestr(name, (change or {}).get(name.split("/", 1)[1], data))


def test_compressed_records_are_refused(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    _rewrite(src / SHARD, compression=zipfile.ZIP_DEFLATED)
    _refused(src, tmp_path, rf"^{SHARD}: record pytorch_model-00002-of-00002/data\.pkl is compressed \(deflate\); "
                            r"PyTorch checkpoints store their records uncompressed$")


def test_cut_pickle_is_truncated_or_corrupt(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    with zipfile.ZipFile(src / SHARD) as zf:
        pkl = zf.read("pytorch_model-00002-of-00002/data.pkl")
    _rewrite(src / SHARD, {"data.pkl": pkl[: len(pkl) // 2]})
    _refused(src, tmp_path, rf"^truncated or corrupt weights file {SHARD} \(.+\); download it again$")


def test_short_storage_record_is_truncated_or_corrupt(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    _rewrite(src / SHARD, {"data/0": b"\0" * 10})
    _refused(src, tmp_path, rf"^truncated or corrupt weights file {SHARD} \(tensor .+ does not fit its storage\)")


def test_a_view_larger_than_its_storage_is_truncated_or_corrupt(tmp_path):
    storage = torch_zip.tensor(np.ones(4, np.float32), "FloatStorage").storage
    for shape, stride in (((5,), (1,)), ((2, 2), (3, 1)), ((10**12,), (0,))):
        torch_zip.save(tmp_path / "w.bin", {"w": torch_zip.Tensor(storage, 0, shape, stride)})
        with pytest.raises(ConversionError, match=r"^truncated or corrupt weights file w\.bin \(tensor w does not fit "):
            list(read_torch(tmp_path / "w.bin"))


def test_integer_tensors_are_named_as_unsupported(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    ids = torch_zip.tensor(np.arange(8, dtype=np.int64), "LongStorage")
    torch_zip.save(src / SHARD, {**_tensors(src / SHARD), "model.position_ids": ids})
    _refused(src, tmp_path, rf"^{SHARD}: tensor model\.position_ids has unsupported type I64$")


def test_a_pickle_of_no_tensors_is_no_state_dict(bin_checkpoint, tmp_path):
    src = _copy(bin_checkpoint, tmp_path)
    torch_zip.save(src / SHARD, {"epoch": 3})
    _refused(src, tmp_path, rf"^{SHARD} holds no state dict of tensors; download the checkpoint again$")
