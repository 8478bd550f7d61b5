"""The plugin's command-line options: what a wrong value tells the user."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_bad_budget_option_names_the_option_and_what_it_takes(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(f"--tokenspy-budget={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--tokenspy-budget takes a number of USD >= 0, got '{value}'*"])


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_json_path_is_a_usage_error_not_a_run_without_the_artifact(
        pytester: pytest.Pytester, value: str) -> None:
    # `--tokenspy-json "$OUT"` with OUT unset: the CI job asked for a file and must not pass without it.
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(f"--tokenspy-json={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*error: argument --tokenspy-json: --tokenspy-json takes a file path, got '{value}' (an unset variable?)"])
    assert result.outlines == []  # no test ran
