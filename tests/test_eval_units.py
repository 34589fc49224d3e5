"""eval's parts without a model: verdict parsing, the two orders combined, data sets, the on-disk cache,
bootstrap intervals and the Markdown report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo_local.errors import UsageError
from bpo_local.eval import SHIPPED, load_dataset, parse_verdict
from bpo_local.eval.cache import StageCache, cache_key
from bpo_local.eval.judge import bpo_outcome, combine, judge_messages
from bpo_local.eval.report import _fenced, bootstrap


@pytest.mark.parametrize(("text", "verdict", "problem"), [
    ("A is more detailed and accurate.\n\n[[A]]", "A", None),
    ("Assistant B follows the instruction. Final verdict: [[B]]", "B", None),
    ("Both are equally good. [[C]]", "C", None),
    ("Both answers are fine.", None, "no verdict"),
    ("[[ b ]]", "B", None),
    ("[[A]] A is better, I repeat: [[A]]", "A", None),
    ("Output \"[[A]]\" if A is better, \"[[B]]\" if B is better.\n\nMy verdict: [[B]]", "B", None),  # echoed format
    ("[[A]] ... on reflection [[B]]", None, "conflicting verdicts [[A]] [[B]]"),
    ("\"[[A]]\" if A is better, \"[[B]]\" if B is better, \"[[C]]\" for a tie", None,
     "conflicting verdicts [[A]] [[B]] [[C]]"),
    ("[A] is better", None, "no verdict"),
    ("", None, "no verdict"),
])
def test_verdicts_as_judges_write_them(text: str, verdict: str | None, problem: str | None) -> None:
    parsed = parse_verdict(text)
    assert (parsed.verdict, parsed.problem) == (verdict, problem)


def test_a_verdict_means_a_bpo_outcome_by_order_and_flips_are_ties() -> None:
    assert bpo_outcome("B", "original_first") == bpo_outcome("A", "optimized_first") == "win"
    assert bpo_outcome("A", "original_first") == bpo_outcome("B", "optimized_first") == "loss"
    assert bpo_outcome("C", "original_first") == "tie" and bpo_outcome(None, "optimized_first") == "invalid"
    assert combine("win", "win") == "win" and combine("loss", "loss") == "loss"
    assert combine("win", "loss") == combine("loss", "win") == combine("win", "tie") == "tie"
    assert combine("win", "invalid") == combine("invalid", "tie") == "invalid"


def test_judge_prompt_is_pair_v2_with_the_question_and_both_answers() -> None:
    system, user = judge_messages("Q?", "first {answer_b}", "second")
    assert system["role"] == "system" and system["content"].startswith("Please act as an impartial judge")
    assert '"[[C]]" for a tie' in system["content"]
    assert user["content"] == ("[User Question]\nQ?\n\n[The Start of Assistant A's Answer]\nfirst {answer_b}\n"
                               "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\nsecond\n"
                               "[The End of Assistant B's Answer]")


def test_shipped_sets_have_the_papers_sizes_and_prompts() -> None:
    sizes = {name: len(load_dataset(name).items) for name in SHIPPED}
    assert sizes == {"vicuna_eval": 80, "dolly_eval": 200, "self_instruct_eval": 252, "bpo_test": 200}
    dolly = load_dataset("dolly_eval", limit=1).items[0]
    assert dolly.prompt.startswith("Who owns the largest share of the Vancouver Whitecaps FC?\nVancouver Whitecaps")
    assert dolly.id == "0" and dolly.dataset == "dolly_eval"
    wordy = load_dataset("self_instruct_eval", limit=1).items[0]
    assert wordy.id == "user_oriented_task_0" and "\nIf you have any questions" in wordy.prompt
    no_context = load_dataset("self_instruct_eval").items[5]
    assert no_context.prompt.endswith("it would be greatly appreciated.")  # empty context: no trailing newline
    vicuna = load_dataset("vicuna_eval", limit=2).items
    assert [i.id for i in vicuna] == ["1", "2"]
    assert vicuna[1].prompt == "What are the most effective ways to deal with stress?"


def test_shipped_bpo_test_is_the_shared_copy(bpo_test_data: Path) -> None:
    expected = [r["prompt"].strip() for r in json.loads(bpo_test_data.read_text())]
    assert [i.prompt for i in load_dataset("bpo_test").items] == expected


def test_data_files_and_their_errors(tmp_path: Path) -> None:
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"prompt": "one"}\n\n{"text": "two", "id": 7}\n')
    items = load_dataset(str(jsonl)).items
    assert [(i.dataset, i.id, i.prompt) for i in items] == [("mine", "1", "one"), ("mine", "7", "two")]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UsageError, match="holds no items"):
        load_dataset(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"x": 1}\n')
    with pytest.raises(UsageError, match="item 2 has no prompt"):
        load_dataset(str(bad))
    with pytest.raises(UsageError, match="no data set 'nope': not one of vicuna_eval"):
        load_dataset("nope")


def test_cache_survives_a_torn_line_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c" / "answer.jsonl"
    cache = StageCache(path)
    cache.put("k1", {"text": "one"})
    cache.put("k2", {"text": "two"})
    cache.close()
    with open(path, "ab") as fh:
        fh.write(b'{"key": "k3", "text": "thr')  # killed mid-write
    again = StageCache(path)
    assert len(again) == 2 and again.get("k2") == {"key": "k2", "text": "two"} and "k3" not in again
    again.put("k3", {"text": "three"})
    again.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k2", "k3"]
    path.write_text('{"key": "k1"}\nnot json\n{"key": "k2"}\n')
    with pytest.raises(UsageError, match="line 2 is not a bpo-local eval cache record"):
        StageCache(path)


def test_cache_keys_depend_on_every_part() -> None:
    key = cache_key(stage="answer", prompt="p", settings={"seed": 0})
    assert key == cache_key(settings={"seed": 0}, prompt="p", stage="answer")
    assert key != cache_key(stage="answer", prompt="p", settings={"seed": 1})


def test_bootstrap_intervals_are_seeded_and_hold_the_rate() -> None:
    outcomes = ["win"] * 12 + ["tie"] * 3 + ["loss"] * 5
    rates = bootstrap(outcomes, seed=0)
    assert rates == bootstrap(outcomes, seed=0) and rates != bootstrap(outcomes, seed=1)
    assert rates["win"].value == 0.6 and rates["tie"].value == 0.15 and rates["invalid"].value == 0
    for rate in rates.values():
        assert rate.low <= rate.value <= rate.high
    assert 0.35 < rates["win"].low < 0.6 < rates["win"].high < 0.85
    assert str(rates["win"]).startswith("60.0% [")
    assert bootstrap([], seed=0) == {}


def test_markdown_fence_outlasts_backticks_in_the_text() -> None:
    assert _fenced("plain") == ["```text", "plain", "```"]
    assert _fenced("code:\n````\nx\n````") == ["`````text", "code:\n````\nx\n````", "`````"]
