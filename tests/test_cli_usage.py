"""Usage errors as a user meets them: one line, exit code 2, and the closest name when one was mistyped."""

from __future__ import annotations

import json
from pathlib import Path

from _cli_helpers import assert_one_line_error, model_args


def test_argparse_errors_are_one_line_with_did_you_mean(run_cli) -> None:
    assert_one_line_error(run_cli("optimze", "hello"), 2, "invalid choice: 'optimze'", "did you mean 'optimize'?")
    assert_one_line_error(run_cli("optimize", "--mode", "agressive", "x"), 2, "--mode", "did you mean 'aggressive'?")
    assert_one_line_error(run_cli("optimize", "--temperature", "-1", "x"), 2, "--temperature")
    assert_one_line_error(run_cli("optimize", "--no-such-flag", "x"), 2, "unrecognized arguments: --no-such-flag")
    assert_one_line_error(run_cli("repl", "--mode", "stabel"), 2, "did you mean 'stable'?")


def test_an_unknown_preset_suggests_the_closest(run_cli, smollm2_gguf: Path) -> None:
    assert_one_line_error(run_cli("optimize", "x", "--preset", "agressive", *model_args(smollm2_gguf)), 2,
                          "unknown preset 'agressive'", "did you mean 'aggressive'?")


def test_a_context_beyond_the_trained_one_warns(run_cli, smollm2_gguf: Path) -> None:
    trained = run_cli("doctor", "--json", *model_args(smollm2_gguf))
    n_train = json.loads(trained.stdout)["model"]["context_train"]
    within = run_cli("optimize", "x", *model_args(smollm2_gguf, "--max-tokens", "2", "--no-log"))
    assert within.returncode == 0 and "trained on" not in within.stderr
    beyond = run_cli("optimize", "x", *model_args(smollm2_gguf, "--max-tokens", "2", "--no-log",
                                                  "--ctx", str(n_train * 2)))
    assert beyond.returncode == 0, beyond.stderr
    assert f"beyond the {n_train}" in beyond.stderr and "--ctx" in beyond.stderr
