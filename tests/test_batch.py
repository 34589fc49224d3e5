"""Batch input parsing and the resumable output file (no model needed; the CLI tests run the model)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpo_local.batch import ResumableOutput, error_record, read_items
from bpo_local.errors import UsageError


def test_jsonl_prompt_keys_in_documented_order_and_malformed_lines_keep_their_number() -> None:
    data = b"\n".join([
        b'{"prompt": "p1", "text": "ignored"}',
        b"",
        b'{"instruction": "i3", "input": "ctx"}',
        b'{"prompt": "  ", "query": "q4"}',
        b"not json",
        b"[1, 2]",
        b'{"other": "x"}',
        b'{"text": "caf\xc3\xa9"}',
        b'{"prompt": "\xff"}',
    ])
    items = read_items(data, "jsonl")
    assert [i.line for i in items] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert [i.prompt for i in items] == ["p1", "i3", "q4", None, None, None, "café", None]
    assert "not valid JSON" in items[3].error
    assert "expected a JSON object, got list" in items[4].error
    assert "no prompt" in items[5].error and "prompt, instruction, input, query, text" in items[5].error
    assert "not valid UTF-8" in items[7].error
    assert items[0].record == {"prompt": "p1", "text": "ignored"}
    assert items[0].digest == hashlib.sha256(b'{"prompt": "p1", "text": "ignored"}').hexdigest()[:16]


def test_json_array_input_is_numbered_like_lines(bpo_test_data: Path) -> None:
    items = read_items(bpo_test_data.read_bytes(), "jsonl")
    dataset = json.loads(bpo_test_data.read_text(encoding="utf-8"))
    assert len(items) == len(dataset) == 200
    assert [i.line for i in items[:3]] == [1, 2, 3]
    assert items[0].prompt == dataset[0]["prompt"] and items[0].record == dataset[0]
    assert len({i.digest for i in items}) == 200


def test_lines_input_handles_crlf_and_skips_blank_lines() -> None:
    items = read_items(b"first\r\n\r\n  second  \nthird", "lines")
    assert [(i.line, i.prompt) for i in items] == [(1, "first"), (3, "second"), (4, "third")]
    assert items[0].record == {"prompt": "first"} and items[1].record == {"prompt": "  second  "}


def _items(n: int):
    return read_items("\n".join(f'{{"prompt": "p{i}"}}' for i in range(1, n + 1)).encode(), "jsonl")


def test_resume_skips_answered_inputs_and_truncates_a_torn_last_line(tmp_path: Path) -> None:
    items = _items(4)
    out = tmp_path / "out.jsonl"
    with ResumableOutput(out) as sink:
        sink.write({**items[0].record, "optimized_prompt": "a", "line": 1, "input_sha256": items[0].digest})
        sink.fail(items[1], "boom")
    with open(out, "ab") as fh:  # what a run killed in the middle of a write leaves
        fh.write(b'{"prompt": "p3", "optimized_prompt": "hal')
    with ResumableOutput(out) as sink:
        assert [i.line for i in sink.pending(items)] == [2, 3, 4]  # a failed input is work not done
        assert sink.failed == 1
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith(b"\n") for line in lines)
    assert json.loads(lines[1]) == error_record(items[1], "boom")


def test_resume_refuses_an_output_written_for_other_input(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    item = _items(1)[0]
    with ResumableOutput(out) as sink:
        sink.write({**item.record, "optimized_prompt": "a", "line": 1, "input_sha256": item.digest})
    changed = read_items(b'{"prompt": "something else"}', "jsonl")
    with ResumableOutput(out) as sink, pytest.raises(UsageError, match="different input"):
        list(sink.pending(changed))


def test_resume_redoes_a_failed_input_whose_line_changed_and_restores_input_order(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    items = _items(2)
    with ResumableOutput(out) as sink:
        sink.fail(items[0], "x")
        sink.write({**items[1].record, "optimized_prompt": "b", "line": 2, "input_sha256": items[1].digest})
    fixed = read_items(b'{"prompt": "fixed"}\n' + json.dumps(items[1].record).encode(), "jsonl")
    with ResumableOutput(out) as sink:
        (todo,) = sink.pending(fixed)
        sink.write({**todo.record, "optimized_prompt": "f", "line": 1, "input_sha256": todo.digest})
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["optimized_prompt"]) for r in records] == [(1, "f"), (2, "b")]


def test_resume_refuses_a_file_that_is_not_batch_output(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("dear diary\n")
    with pytest.raises(UsageError, match="not a bpo-local batch record"):
        ResumableOutput(out)
    assert out.read_text() == "dear diary\n"


def test_two_runs_cannot_append_to_one_output(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from bpo_local.batch import ResumableOutput;"
         f"o = ResumableOutput(Path({str(out)!r})); print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match="another bpo-local run"):
            ResumableOutput(out)
    finally:
        holder.kill()
        holder.wait()
