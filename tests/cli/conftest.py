"""Fixture databases for the CLI, recorded through the real API in the test process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tokenspy
from tokenspy_core import default_tracker, store

BASE = "a" * 40
CURRENT = "b" * 40


@dataclass(frozen=True)
class Dbs:
    base: Path      # the baseline run only
    current: Path   # the current run only
    both: Path      # both runs, told apart by their git commit
    box: str        # what tokenspy.report() showed in the recording process for `both`
    box_no_hints: str
    base_commit: str = BASE
    current_commit: str = CURRENT


def record_run(commit: str, answer_output: int) -> None:
    tokenspy.init(tags={"git_commit": commit})

    @tokenspy.profile
    def retrieve() -> None:
        tokenspy.record("gpt-4o-mini", input_tokens=1000, output_tokens=200)

    @tokenspy.profile
    def answer() -> None:
        retrieve()
        tokenspy.record("gpt-4o", input_tokens=2000, output_tokens=answer_output, tags={"user": "bob"})

    with tokenspy.session("chat"):
        answer()
        answer()
    tokenspy.record("gpt-4o", input_tokens=100, output_tokens=10, tags={"user": "ann"})


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[Dbs]:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    tokenspy.set_price("gpt-4o-mini", input=0.15, output=0.6)
    both = store.attach_store(default_tracker(), tmp_path / "both.db")
    base = store.attach_store(default_tracker(), tmp_path / "base.db")
    record_run(BASE, answer_output=500)
    base.close()
    current = store.attach_store(default_tracker(), tmp_path / "current.db")
    record_run(CURRENT, answer_output=800)
    with tokenspy.session("chat"):  # the current run also has an abandoned stream and a failure
        stream = tokenspy.start_call("gpt-4o", prompt="Tell me a story")
        stream.add_text("Once upon a time")
        stream.abort()
        failed = tokenspy.start_call("gpt-4o", prompt="q", stream=False)
        failed.fail(TimeoutError("read timeout"))
    current.close()
    both.close()
    yield Dbs(tmp_path / "base.db", tmp_path / "current.db", tmp_path / "both.db",
              default_tracker().render("text"), default_tracker().render("text", hints=False))
    store.close_all()
