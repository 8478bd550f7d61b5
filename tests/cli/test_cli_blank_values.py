"""An empty commit or database (an unset CI variable) is a usage error, never "no filter" or "the
default database": a baseline of every call would let a cost regression pass."""

from __future__ import annotations

from typing import Any

import pytest

from tokenspy.cli import main

_BLANK_COMMIT = ("tokenspy: error: argument --commit: blank commit {!r} (an unset variable?): "
                 "it would match every call\n")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("blank", ["", " "])
@pytest.mark.parametrize("command", ["report", "history"])
def test_a_blank_commit_filter_is_a_usage_error(dbs: Any, capsys: pytest.CaptureFixture[str],
                                                 command: str, blank: str) -> None:
    assert run(capsys, command, "--db", dbs.both, "--commit", blank) == (2, "", _BLANK_COMMIT.format(blank))


def test_compare_with_a_blank_commit_is_a_usage_error_not_the_whole_database(
        dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "compare", "--db", dbs.both, "--commit", "", "--commit", dbs.current_commit) == (
        2, "", _BLANK_COMMIT.format(""))


def test_annotate_with_a_blank_baseline_fails_the_ci_step_instead_of_passing_a_regression(
        dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # The current run costs more than the baseline commit: a regression, exit 1.
    status, _, _ = run(capsys, "annotate", "--db", dbs.both, "--baseline", dbs.base_commit,
                       "--current", dbs.current_commit, "--fail-on-regression")
    assert status == 1
    # "$BASE_SHA" unset: the whole database (both runs) as the baseline would have hidden it (exit 0).
    for side in ("--baseline", "--current"):
        argv = {"--baseline": dbs.base_commit, "--current": dbs.current_commit, side: ""}
        assert run(capsys, "annotate", "--db", dbs.both, *(x for kv in argv.items() for x in kv),
                   "--fail-on-regression") == (
            2, "", f"tokenspy: error: argument {side}: blank value '' (an unset variable?): "
                   "name a database, or a commit with --db\n")
    assert run(capsys, "annotate", "--baseline", "", "--current", dbs.current) == (
        2, "", "tokenspy: error: argument --baseline: blank value '' (an unset variable?): "
               "name a database, or a commit with --db\n")


@pytest.mark.parametrize("argv", [["report", "--db", ""], ["history", "--db", ""],
                                  ["compare", "--db", "", "--db", "{current}"],
                                  ["annotate", "--db", "", "--baseline", "x", "--current", "y"]])
def test_a_blank_database_path_is_a_usage_error_not_the_default_database(
        dbs: Any, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    argv = [a.format(current=dbs.current) for a in argv]
    assert run(capsys, *argv) == (
        2, "", "tokenspy: error: argument --db: blank database path '' (an unset variable?)\n")


def test_a_blank_tag_key_is_a_usage_error_not_a_group_of_every_call(
        dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "report", "--db", dbs.both, "--by", "tag", "--tag", "") == (
        2, "", "tokenspy: error: argument --tag: blank tag key '' (an unset variable?)\n")
