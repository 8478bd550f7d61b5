"""Every command on a stdout that cannot encode the CLI's Unicode ("→", "±", "·", "⚠️", the box) or a
name: a Windows console redirected to a file (cp1252), an ASCII pipe. A real child process, as users
run it, so the stream is the interpreter's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tokenspy
from tokenspy_core import default_tracker, store


def tokenspy_cli(encoding: str, *argv: object, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("TOKENSPY_STRICT", "GITHUB_STEP_SUMMARY")}
    environ.update(env or {}, PYTHONIOENCODING=encoding)  # no strict mode, as users run it
    proc = subprocess.run([sys.executable, "-m", "tokenspy", *map(str, argv)], capture_output=True,
                          timeout=60, env=environ, check=False)
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_history_compare_and_annotate_switch_to_ascii_when_stdout_cannot_encode_the_arrow(
        dbs: Any, encoding: str) -> None:
    status, out, err = tokenspy_cli(encoding, "history", "--db", dbs.current, "--limit", "3")
    assert (status, err) == (0, "")
    assert cells(out.decode(encoding).splitlines()[0])[2:4] == ["gpt-4o", "100 -> 10 tok"]

    status, out, err = tokenspy_cli(encoding, "compare", "--db", dbs.base, "--db", dbs.current)
    assert (status, err) == (0, "")
    lines = out.decode(encoding).splitlines()
    assert cells(lines[0]) == ["span", "A: base.db", "B: current.db", "delta", "change", "calls A -> B"]
    rows = {cells(line)[0]: cells(line)[1:] for line in lines[1:]}
    assert rows["chat / answer"] == ["$0.0200", "$0.0260", "+$0.0060", "+30.0%", "2 -> 2"]
    assert rows["chat / answer / retrieve"] == ["$0.0005", "$0.0005", "+-$0", "0%", "2 -> 2"]

    status, out, err = tokenspy_cli(encoding, "annotate", "--baseline", dbs.base, "--current", dbs.current)
    assert (status, err) == (0, "")
    lines = out.decode(encoding).splitlines()
    assert lines[0] == ("::warning title=tokenspy cost regression::span chat / answer: $0.0200 -> $0.0260 "
                        "(+30.0%25, threshold +10%25)")
    assert "Baseline **base.db** (5 calls, $0.0209) - current **current.db** (7 calls, " in out.decode(encoding)
    assert "| ! | chat / answer | $0.0200 | $0.0260 | +$0.0060 | +30.0% |" in lines
    assert "|  | chat / answer / retrieve | $0.0005 | $0.0005 | +-$0 | 0% |" in lines


def test_report_uses_the_same_check_and_a_utf8_stdout_keeps_unicode(dbs: Any) -> None:
    status, out, err = tokenspy_cli("cp1252", "report", "--db", dbs.both, "--no-hints")
    assert (status, err) == (0, "") and out.startswith(b"+====") and b"|  tokenspy cost report" in out
    status, out, err = tokenspy_cli("utf-8", "compare", "--db", dbs.base, "--db", dbs.current)
    assert (status, err) == (0, "") and cells(out.decode().splitlines()[0])[-1] == "calls A → B"


def test_the_job_summary_file_stays_unicode_whatever_stdout_encodes(dbs: Any, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    status, out, err = tokenspy_cli("ascii", "annotate", "--baseline", dbs.base, "--current", dbs.current,
                                    env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert (status, err) == (0, "") and out.decode("ascii").startswith("::warning")
    text = summary.read_text(encoding="utf-8")
    assert "| ⚠️ | chat / answer | $0.0200 | $0.0260 | +$0.0060 | +30.0% |" in text
    assert "|  | chat / answer / retrieve | $0.0005 | $0.0005 | ±$0 | 0% |" in text


def test_a_name_stdout_cannot_encode_is_written_with_question_marks(tmp_path: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    db = store.attach_store(default_tracker(), tmp_path / "u.db")
    with tokenspy.session("résumé ✓"):  # "é" is in cp1252, "✓" in neither
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)
    db.close()
    for encoding, name in (("cp1252", "résumé ?"), ("ascii", "r?sum? ?")):
        status, out, err = tokenspy_cli(encoding, "history", "--db", tmp_path / "u.db")
        assert (status, err) == (0, "")
        assert cells(out.decode(encoding))[1:5] == [name, "gpt-4o", "1,000 -> 100 tok", "$0.0035"]
        status, out, err = tokenspy_cli(encoding, "report", "--db", tmp_path / "u.db", "--by", "model",
                                        "--format", "csv")
        assert (status, err) == (0, "") and out.decode(encoding).splitlines()[1].startswith("gpt-4o,1,1000,")
        status, out, err = tokenspy_cli(encoding, "report", "--db", tmp_path / "u.db", "--no-hints")
        assert (status, err) == (0, "") and f"|  {name}  " in out.decode(encoding)


def test_html_on_a_stdout_that_cannot_encode_it_is_the_exact_utf8_page(tmp_path: Path) -> None:
    db = store.attach_store(default_tracker(), tmp_path / "u.db")
    with tokenspy.session("résumé ✓"):
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)
    db.close()
    status, utf8, err = tokenspy_cli("utf-8", "report", "--db", tmp_path / "u.db", "--format", "html")
    assert (status, err) == (0, "") and "résumé ✓" in utf8.decode("utf-8")
    for encoding in ("cp1252", "ascii"):  # the page declares UTF-8: its bytes, not "?" or mojibake
        assert tokenspy_cli(encoding, "report", "--db", tmp_path / "u.db", "--format", "html") == (0, utf8, "")
