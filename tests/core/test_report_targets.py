"""Where report() writes: a bad file= or path= is a TypeError/ValueError naming it, before anything is
written; init(persist=) names the file it cannot open."""

from __future__ import annotations

import io
import os
import pathlib
import sqlite3
from collections.abc import Iterator

import pytest

import tokenspy
from tokenspy_core import config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    monkeypatch.chdir(tmp_path)  # a report written by mistake would land here
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    yield tmp_path


@pytest.mark.parametrize("format", ["text", "json", "html"])
@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ({"file": "report.txt"}, TypeError, r"^file must be an open text file .* got 'report.txt'; .* pass path="),
        ({"file": 5}, TypeError, r"^file must be an open text file"),
        ({"file": b""}, TypeError, r"^file must be an open text file"),
        ({"file": io.BytesIO()}, TypeError, r"^file must be opened in text mode"),
        ({"path": 5}, TypeError, r"^path must be a file path \(a str or os.PathLike\), got 5"),
        ({"path": b"report.txt"}, TypeError, r"^path must be a file path"),
        ({"path": ""}, ValueError, r"^path must be a file path, got an empty path"),
        ({"path": pathlib.Path("")}, ValueError, r"^path must be a file path, got the directory '\.'"),
    ],
    ids=["file-str", "file-int", "file-bytes", "file-binary", "path-int", "path-bytes", "path-empty", "path-dir"],
)
def test_a_bad_target_is_named_and_nothing_is_written(format: str, target: dict[str, object],
                                                      error: type[Exception], message: str,
                                                      _in_tmp: pathlib.Path) -> None:
    with pytest.raises(error, match=message):
        tokenspy.report(format, **target)  # type: ignore[arg-type]
    assert os.listdir(_in_tmp) == []


def test_a_pathlike_path_gets_the_report(_in_tmp: pathlib.Path) -> None:
    class Target(os.PathLike[str]):
        def __fspath__(self) -> str:
            return str(_in_tmp / "cost.json")

    assert tokenspy.report("json", path=Target()) == str(_in_tmp / "cost.json")
    assert '"total_calls": 1' in (_in_tmp / "cost.json").read_text()


def test_persist_under_a_file_names_the_path_and_applies_no_option(_in_tmp: pathlib.Path) -> None:
    (_in_tmp / "notes").write_text("a file, not a directory\n")
    target = _in_tmp / "notes" / "usage.db"
    with pytest.raises(sqlite3.OperationalError, match=f"^persist: cannot use '{target}' as the tokenspy "
                                                       "database: unable to open database file$"):
        tokenspy.init(persist=str(target), capture_content=True)
    assert config.capture_content is False
