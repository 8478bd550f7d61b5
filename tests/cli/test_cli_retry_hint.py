"""The retry hint of a database recorded with content capture: the CLI (capture off) and the live report agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

import tokenspy
from tokenspy.cli import main
from tokenspy.testing import FakeProvider
from tokenspy_core import store

PROMPT = "Order 1234 never arrived. " * 20


def _record_a_retried_stream(db: Path, retry_prompt: str) -> list[dict[str, Any]]:
    """A stream that breaks midway, then a second attempt; the live report's retry hints."""
    tokenspy.set_price("gpt-4o-mini", input=1, output=2)
    tokenspy.init(capture_content=True, persist=db)
    with FakeProvider(reply=" ".join(["word"] * 20)) as fp:
        client = OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0)

        @tokenspy.profile
        def classify() -> None:
            for prompt, flags in ((PROMPT, ("midstream",)), (retry_prompt, ())):
                fp.set_flags(*flags)
                try:
                    stream = client.chat.completions.create(
                        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": prompt}])
                    for _ in stream:
                        pass
                    return
                except openai.APIError:
                    continue

        classify()
    failed, finished = tokenspy.calls()
    assert (failed.status, finished.status) == ("failed", "finished")
    # $1/M input, $2/M output: 148 prompt tokens (estimated) + 10 words read before the break.
    assert (failed.input_tokens, failed.output_tokens, failed.cost_femto) == (148, 10, 168 * 10**9)
    live = json.loads(tokenspy.report(format="json"))["hints"]
    store.close_all()
    return [h for h in live if h["kind"] == "retry"]


def _cli_retry_hints(db: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    tokenspy.init()  # the reading side does not capture content (the CLI never does)
    assert main(["report", "--db", str(db), "--format", "json"]) == 0
    hints = json.loads(capsys.readouterr().out)["hints"]
    return [h for h in hints if h["kind"] == "retry"]


def test_cli_does_not_take_a_different_captured_prompt_for_a_retry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "u.db"
    assert _record_a_retried_stream(db, PROMPT + "again") == []
    assert _cli_retry_hints(db, capsys) == []
    # Nor the live process once a later init() turned capture off.
    assert [h["kind"] for h in json.loads(tokenspy.report(format="json"))["hints"]] == []


def test_cli_gives_the_live_retry_hint_for_the_same_captured_prompt(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "u.db"
    live = _record_a_retried_stream(db, PROMPT)
    assert [(h["span"], h["model"], h["saving_femto"]) for h in live] == [("classify", "gpt-4o-mini", 168 * 10**9)]
    assert _cli_retry_hints(db, capsys) == live
