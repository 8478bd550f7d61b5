"""Names a provider, a gateway or a user sets (served model, span, tag, error text) reach the terminal
without their control characters: ESC and BEL would let a model name clear the screen, retitle the
window or write the clipboard (OSC 52) when someone reads a report."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import httpx
import openai
import pytest

import tokenspy
from tokenspy.cli import main
from tokenspy_core import default_tracker, store

EVIL_MODEL = "gpt-4o\x1b]0;pwned\x07\x1b[2J"
SHOWN_MODEL = "gpt-4o ]0;pwned  [2J"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) == "Cc" and c != "\n"]


def _record(db: Path, prompt_tokens: int) -> None:
    """One call through the real openai SDK to a gateway that serves `EVIL_MODEL`, in a span and with a
    tag that carry control characters too (the 8-bit CSI 0x9b, DEL)."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": EVIL_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}})

    client = tokenspy.observe(openai.OpenAI(api_key="test", base_url="http://gw.test/v1", max_retries=0,
                                            http_client=httpx.Client(transport=httpx.MockTransport(answer))))
    writer = store.attach_store(default_tracker(), db)
    with tokenspy.session("chat\x9b2J", tags={"user": "bob\x1b[8m\x7f"}):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    writer.close()
    tokenspy.unobserve(client)


def test_report_history_and_tables_show_control_characters_as_spaces(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "u.db"
    _record(db, 10)
    status, out, _ = run(capsys, "report", "--db", db, "--no-hints")
    assert status == 0 and not _controls(out)
    assert out.splitlines()[4:6] == ["║  chat 2J                    $0.000035  ████████████████  100%  ║",
                                     "║    └─ gpt-4o ]0;pwned  [2J  $0.000035                          ║"]
    status, out, _ = run(capsys, "report", "--db", db, "--by", "model")
    assert status == 0 and not _controls(out)
    assert out.splitlines()[1] == f"{SHOWN_MODEL}      1     10       1      11  $0.000035   100%"
    status, out, _ = run(capsys, "report", "--db", db, "--by", "tag", "--tag", "user")
    assert status == 0 and not _controls(out)
    assert out.splitlines()[1] == "bob [8m       1     10       1      11  $0.000035   100%"
    status, out, _ = run(capsys, "history", "--db", db)
    assert status == 0 and not _controls(out)
    assert re.fullmatch(rf"[-0-9]+ [:0-9]+  chat 2J  {re.escape(SHOWN_MODEL)}  10 → 1 tok  \$0\.000035  [0-9,]+ ms\n",
                        out)


def test_annotate_warnings_and_summary_show_control_characters_as_spaces(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record(tmp_path / "a.db", 10)
    _record(tmp_path / "b.db", 1000)
    status, out, _ = run(capsys, "annotate", "--baseline", tmp_path / "a.db", "--current", tmp_path / "b.db",
                         "--by", "model")
    assert status == 0 and not _controls(out)
    lines = out.splitlines()
    assert lines[0] == (f"::warning title=tokenspy cost regression::model {SHOWN_MODEL}: $0.000035 → $0.0025 "
                        "(+7071.4%25, threshold +10%25)")
    assert f"| ⚠️ | {SHOWN_MODEL} | $0.000035 | $0.0025 | +$0.0025 | +7071.4% |" in lines
