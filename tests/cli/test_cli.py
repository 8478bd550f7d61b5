"""Every `tokenspy` command on fixture databases, in-process through main(argv)."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import tokenspy
from tokenspy.cli import main
from tokenspy_core import default_tracker, store


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# -- report --------------------------------------------------------------------------------------------

def test_report_is_the_box_the_recording_process_showed(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "report", "--db", dbs.both)
    assert (status, err) == (0, "")
    assert out == dbs.box + "\n"
    assert "chat" in out and "answer" in out and "retrieve" in out


def test_report_json_has_the_live_totals(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspy_core import default_tracker

    status, out, _ = run(capsys, "report", "--db", dbs.both, "--format", "json")
    data = json.loads(out)
    live = default_tracker().stats()
    assert status == 0
    for key in ("total_cost_usd", "total_cost_usd_exact", "total_tokens", "total_calls", "partial_calls",
                "failed_calls", "by_model", "by_function", "tree"):
        assert data[key] == json.loads(json.dumps(live[key])), key


def test_report_by_model_table(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "report", "--db", dbs.base, "--by", "model")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "calls", "input", "output", "tokens", "cost", "share", "flags"]
    assert lines[1].split() == ["gpt-4o", "3", "4,100", "1,010", "5,110", "$0.0204", "97%"]
    assert lines[2].split() == ["gpt-4o-mini", "2", "2,000", "400", "2,400", "$0.0005", "3%"]
    assert lines[3].split() == ["total", "5", "6,100", "1,410", "7,510", "$0.0209", "100%"]


def test_report_by_model_flags_count_in_thousands_as_every_other_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    db = store.attach_store(default_tracker(), tmp_path / "many.db")
    tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)  # $0.0035
    with pytest.warns(UserWarning, match="no price known"):
        for _ in range(1_200):
            tokenspy.record("private-model", input_tokens=1, output_tokens=1)
    db.close()
    status, out, _ = run(capsys, "report", "--db", tmp_path / "many.db", "--by", "model")
    lines = [line.split() for line in out.splitlines()]
    assert status == 0
    assert lines[2] == ["private-model", "1,200", "1,200", "1,200", "2,400", "unpriced", "1,200", "unpriced"]
    assert lines[3] == ["total", "1,201", "2,200", "1,300", "3,500", "$0.0035", "100%", "1,200", "unpriced"]


def test_report_by_tag_json_and_by_one_tag_csv(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "report", "--db", dbs.base, "--by", "tag", "--format", "json")
    groups = {g["tag"]: (g["calls"], g["cost_usd"]) for g in json.loads(out)["groups"]}
    assert status == 0
    assert groups == {"user=bob": (2, 0.02), "user=ann": (1, 0.00035), "(no tags)": (2, 0.00054)}
    status, out, _ = run(capsys, "report", "--db", dbs.base, "--by", "tag", "--tag", "user",
                         "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert status == 0 and [(r["user"], r["calls"], r["cost_usd"]) for r in table] == [
        ("bob", "2", "0.02"), ("(no user)", "2", "0.00054"), ("ann", "1", "0.00035")]


def test_report_by_tag_keeps_values_that_print_alike_apart_and_csv_costs_are_plain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    db = store.attach_store(default_tracker(), tmp_path / "tags.db")
    for flag in (None, "None", True, "True", True):
        tokenspy.record("gpt-4o", input_tokens=30, output_tokens=1, tags={"flag": flag})  # $0.000085 each
    db.close()
    status, out, _ = run(capsys, "report", "--db", tmp_path / "tags.db", "--by", "tag", "--tag", "flag",
                         "--format", "csv")
    table = {r["flag"]: (r["calls"], r["cost_usd"]) for r in csv.DictReader(io.StringIO(out))}
    assert status == 0 and table == {"true": ("2", "0.00017"), "null": ("1", "0.000085"),
                                     "None": ("1", "0.000085"), "True": ("1", "0.000085")}


def test_report_by_day_and_by_commit(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(dbs.both) as conn:
        conn.execute("UPDATE calls SET ts = 1767225600.5 WHERE git_commit = ?", (dbs.base_commit,))
        conn.execute("UPDATE calls SET ts = 1767312000.5 WHERE git_commit = ?", (dbs.current_commit,))
    status, out, _ = run(capsys, "report", "--db", dbs.both, "--by", "day", "--format", "csv")
    assert status == 0
    assert [(r["day"], r["calls"]) for r in csv.DictReader(io.StringIO(out))] == [("2026-01-01", "5"),
                                                                                  ("2026-01-02", "7")]
    status, out, _ = run(capsys, "report", "--db", dbs.both, "--by", "commit")
    assert status == 0 and "bbbbbbbbbbbb" in out and "aaaaaaaaaaaa" in out


def test_report_since_leaves_out_older_calls(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(dbs.both) as conn:
        conn.execute("UPDATE calls SET ts = ? WHERE git_commit = ?",
                     (time.time() - 10 * 86400, dbs.base_commit))
    status, out, _ = run(capsys, "report", "--db", dbs.both, "--since", "7d", "--format", "json")
    assert status == 0 and json.loads(out)["total_calls"] == 7
    status, out, _ = run(capsys, "report", "--db", dbs.both, "--since", "2000-01-01", "--format", "json")
    assert status == 0 and json.loads(out)["total_calls"] == 12


def test_report_html_to_a_file(dbs: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    status, out, err = run(capsys, "report", "--db", dbs.both, "--format", "html", "-o", target)
    assert (status, out, err) == (0, "", f"tokenspy: wrote {target}\n")
    html = target.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "retrieve" in html


def test_report_text_to_a_file_and_ascii(dbs: Any, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    status, _, _ = run(capsys, "report", "--db", dbs.both, "--ascii", "--no-hints", "-o", target)
    text = target.read_text(encoding="utf-8")
    assert status == 0 and text.startswith("+====") and "╔" not in text and "hints" not in text


# -- history -------------------------------------------------------------------------------------------

def test_history_shows_the_most_recent_calls_with_flags(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "history", "--db", dbs.current, "--limit", "3")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 3
    assert "(unattributed)" in lines[0] and "gpt-4o" in lines[0] and "100 → 10 tok" in lines[0]
    assert "$0.0004" in lines[0] and " ms" in lines[0]
    assert lines[1].rstrip().endswith("partial, estimated") and "chat " in lines[1]
    assert lines[2].rstrip().endswith("error: TimeoutError: read timeout")


def test_history_json(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "history", "--db", dbs.base, "-n", "2", "--format", "json")
    calls = json.loads(out)
    assert status == 0 and [c["span_path"] for c in calls] == [["chat", "answer"], []]
    assert calls[1]["cost_usd"] == 0.00035 and calls[1]["tags"]["user"] == "ann"


# -- compare -------------------------------------------------------------------------------------------

def test_compare_two_databases(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "compare", "--db", dbs.base, "--db", dbs.current)
    assert status == 0
    lines = out.splitlines()
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1:] for line in lines[1:]}
    header = ["span", "A: base.db", "B: current.db", "delta", "change", "calls A → B"]
    assert re.split(r"\s{2,}", lines[0]) == header
    assert lines[1].startswith("chat / answer ")  # the largest change first
    assert rows["chat / answer"] == ["$0.0200", "$0.0260", "+$0.0060", "+30.0%", "2 → 2"]
    assert rows["chat / answer / retrieve"] == ["$0.0005", "$0.0005", "±$0", "0%", "2 → 2"]
    assert rows["chat"][0] == "$0" and rows["chat"][3:] == ["new", "0 → 2"]
    assert rows["total"][0] == "$0.0209" and rows["total"][4] == "5 → 7"


def test_compare_names_a_span_gone_from_b_removed(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "compare", "--db", dbs.current, "--db", dbs.base)
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1:] for line in out.splitlines()[1:]}
    assert status == 0 and rows["chat"][0] != "$0"  # it cost something in A, and is not in B
    assert rows["chat"][1:] == ["$0", rows["chat"][2], "removed", "2 → 0"]


def test_compare_two_commits_of_one_database_gives_the_same_numbers(
        dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, by_db, _ = run(capsys, "compare", "--db", dbs.base, "--db", dbs.current, "--format", "json")
    status2, by_commit, _ = run(capsys, "compare", "--db", dbs.both, "--commit", dbs.base_commit[:7],
                                "--commit", dbs.current_commit, "--format", "json")
    a, b = json.loads(by_db), json.loads(by_commit)
    assert status == status2 == 0 and a["rows"] == b["rows"] and a["total"] == b["total"]
    answer = next(r for r in b["rows"] if r["key"] == "chat / answer")
    assert (answer["a_cost_usd"], answer["b_cost_usd"]) == (0.02, 0.026)
    assert answer["delta_pct"] == pytest.approx(30)
    assert (b["a"], b["b"]) == ("aaaaaaa", "bbbbbbbbbbbb")


def test_compare_by_model(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "compare", "--db", dbs.base, "--db", dbs.current, "--by", "model")
    assert status == 0 and out.splitlines()[0].startswith("model")
    assert next(line for line in out.splitlines() if line.startswith("gpt-4o-mini")).split()[-4] == "0%"


# -- annotate ------------------------------------------------------------------------------------------

def test_annotate_writes_warnings_and_appends_the_job_summary(
        dbs: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    status, out, err = run(capsys, "annotate", "--baseline", dbs.base, "--current", dbs.current)
    assert (status, err) == (0, "")
    warnings = out.splitlines()
    assert warnings[0] == ("::warning title=tokenspy cost regression::span chat / answer: $0.0200 → $0.0260 "
                           "(+30.0%25, threshold +10%25)")
    assert warnings[1].startswith("::warning title=tokenspy cost regression::span chat: $0 → $0.0")
    assert warnings[1].endswith("(new, threshold +10%25)") and len(warnings) == 2
    text = summary.read_text()
    assert text.startswith("# earlier step\n## tokenspy: LLM cost vs baseline")
    assert "| ⚠️ | chat / answer | $0.0200 | $0.0260 | +$0.0060 | +30.0% |" in text
    assert "|  | chat / answer / retrieve | $0.0005 | $0.0005 | ±$0 | 0% |" in text
    assert "**2 spans** above the +10% threshold." in text


def test_annotate_threshold_min_delta_and_fail_flag(
        dbs: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    status, out, _ = run(capsys, "annotate", "--baseline", dbs.base, "--current", dbs.current,
                         "--threshold", "50%", "--min-delta", "0.001", "--fail-on-regression")
    assert status == 0 and "::warning" not in out
    assert "## tokenspy: LLM cost vs baseline" in out and "No span above the +50% threshold." in out
    status, out, _ = run(capsys, "annotate", "--db", dbs.both, "--baseline", dbs.base_commit,
                         "--current", dbs.current_commit, "--threshold", "25", "--fail-on-regression")
    assert status == 1 and out.count("::warning") == 2


# -- errors --------------------------------------------------------------------------------------------

def bad_inputs(dbs: Any, tmp_path: Path) -> list[list[object]]:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database")
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    both = dbs.both
    return [
        [],
        ["report", "--db", tmp_path / "missing.db"],
        ["history", "--db", text_file],
        ["report", "--db", foreign],
        ["report", "--db", both, "--since", "7x"],
        ["report", "--db", both, "--format", "pdf"],
        ["report", "--db", both, "--by", "model", "--format", "html"],
        ["report", "--db", both, "--by", "model", "--tag", "user"],
        ["report", "--db", both, "--output", tmp_path / "no" / "such" / "dir.txt"],
        ["history", "--db", both, "--limit", "0"],
        ["report", "--db", both, "--db", both],  # one database: never silently the last of two
        ["history", "--db", both, "--db", both],
        ["report", "--db", both, "--commit", "a" * 40, "--commit", "b" * 40],
        ["annotate", "--db", both, "--db", both, "--baseline", "a" * 40, "--current", "b" * 40],
        ["compare", "--db", both],
        ["compare", "--db", both, "--commit", "a" * 40, "--commit", "ffff"],
        ["annotate", "--baseline", both],
        ["annotate", "--baseline", both, "--current", both, "--threshold", "ten"],
        ["frobnicate"],
    ]


def test_bad_input_is_one_line_on_stderr_and_exit_status_2(
        dbs: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in bad_inputs(dbs, tmp_path):
        status, out, err = run(capsys, *argv)
        assert status == 2, argv
        assert err.startswith("tokenspy: error: ") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in err and out == "", argv
    assert not (tmp_path / "missing.db").exists()


def test_error_messages_say_what_is_wrong(dbs: Any, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    _, _, err = run(capsys, "report", "--db", tmp_path / "missing.db")
    assert err == f"tokenspy: error: no tokenspy database at {tmp_path / 'missing.db'}\n"
    _, _, err = run(capsys, "report", "--db", dbs.both, "--since", "7x")
    assert "invalid duration '7x'" in err and "7d" in err
    for command in ("report", "history"):  # a duration past 1970 failed later, as an internal error (exit 1)
        status, _, err = run(capsys, command, "--db", dbs.both, "--since", "99999999999w", "--commit", "zzz")
        assert (status, err) == (2, "tokenspy: error: argument --since: invalid duration '99999999999w': "
                                    "longer than the time since 1970\n")
    (tmp_path / "notes.txt").write_text("hello")
    _, _, err = run(capsys, "history", "--db", tmp_path / "notes.txt")
    assert "is not a tokenspy database" in err


def test_a_repeated_db_names_the_command_that_compares_two(dbs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "report", "--db", dbs.base, "--db", dbs.current, "--by", "model")
    assert (status, out) == (2, "")
    assert err == ("tokenspy: error: --db given twice: tokenspy report takes one "
                   "(to compare two: tokenspy compare --db A --db B)\n")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "report" in out and "annotate" in out


def test_an_empty_file_is_not_a_tokenspy_database_and_stays_empty(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.touch()  # a reading command must never turn a file into a database (only init(persist=) does)
    for command in ("report", "history"):
        status, out, err = run(capsys, command, "--db", notes)
        assert (status, out) == (2, "")
        assert err == f"tokenspy: error: {notes} is not a tokenspy database (an empty file)\n"
    assert notes.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # no -wal, no -shm


@pytest.mark.parametrize("command", ["report", "history"])
def test_an_unknown_commit_is_an_error_as_in_compare(
        dbs: Any, capsys: pytest.CaptureFixture[str], command: str) -> None:
    status, out, err = run(capsys, command, "--db", dbs.both, "--commit", "zzz")
    assert (status, out) == (2, "")
    assert err == f"tokenspy: error: no calls recorded for commit 'zzz' in {dbs.both}\n"
    status, _, err2 = run(capsys, "compare", "--db", dbs.both, "--commit", "zzz", "--commit", dbs.base_commit)
    assert (status, err2) == (2, err)
    status, out, err = run(capsys, command, "--db", dbs.both, "--commit", dbs.base_commit[:7], "--since",
                           "2999-01-01")
    assert (status, out) == (2, "")
    assert err == (f"tokenspy: error: no calls recorded for commit 'aaaaaaa' in {dbs.both} "
                   "since 2999-01-01 00:00:00\n")
    status, out, _ = run(capsys, command, "--db", dbs.both, "--commit", dbs.base_commit[:7])
    assert status == 0 and "gpt-4o-mini" in out


def test_history_keeps_one_line_per_call_when_an_error_has_newlines(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tokenspy_core import Call, Tracker
    from tokenspy_core.store import attach_store

    tracker = Tracker()
    store = attach_store(tracker, tmp_path / "u.db")
    Call(tracker, "gpt-4o").fail("upstream said:\nbad gateway\n")
    Call(tracker, "gpt-4o").fail("timeout")
    store.close()
    status, out, _ = run(capsys, "history", "--db", tmp_path / "u.db")
    assert status == 0 and "upstream said: bad gateway" in out
    assert len([line for line in out.splitlines() if "gpt-4o" in line]) == 2


def test_report_of_calls_priced_by_set_price_does_not_warn_they_were_unpriced(tmp_path: Path) -> None:
    # The recording process priced the model with set_price; the CLI process knows no price for it.
    # Its hints look prices up too, and must not claim the calls went unpriced.
    import subprocess
    import sys

    from tokenspy_core import Call, Tracker
    from tokenspy_core.store import attach_store

    tracker = Tracker()
    tracker.prices.set_price("my-finetune", input=1, output=2)
    db = attach_store(tracker, tmp_path / "u.db")
    for _ in range(6):  # enough calls of one model and span for the prompt-caching hint to look
        Call(tracker, "my-finetune").finish({"prompt_tokens": 5000, "completion_tokens": 100})
    db.close()
    done = subprocess.run([sys.executable, "-m", "tokenspy", "report", "--db", str(tmp_path / "u.db")],
                          capture_output=True, text=True, check=True)
    assert "$0.0312" in done.stdout and "my-finetune" in done.stdout
    assert "no price" not in done.stderr, done.stderr


def test_tables_keep_one_row_per_span_whose_name_has_a_line_break(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A newline would split a Markdown table row (the job summary) or a text table row in two.
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    for name, tokens in (("a.db", 100), ("b.db", 1000)):
        db = store.attach_store(default_tracker(), tmp_path / name)
        for span in ("x\n::error::pwn", "a|b", "r\r\nq"):
            with tokenspy.session(span):
                tokenspy.record("gpt-4o", input_tokens=tokens, output_tokens=0)
        db.close()
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    status, out, _ = run(capsys, "annotate", "--baseline", tmp_path / "a.db", "--current", tmp_path / "b.db")
    assert status == 0
    assert "::warning title=tokenspy cost regression::span x%0A::error::pwn: $0.0003 → $0.0025" in out
    rows = [line for line in summary.read_text().splitlines() if line.startswith("| ⚠️ |")]
    assert rows == ["| ⚠️ | a\\|b | $0.0003 | $0.0025 | +$0.0023 | +900.0% |",
                    "| ⚠️ | r q | $0.0003 | $0.0025 | +$0.0023 | +900.0% |",
                    "| ⚠️ | x ::error::pwn | $0.0003 | $0.0025 | +$0.0023 | +900.0% |"]
    assert not any(line.startswith("::") for line in summary.read_text().splitlines())
    status, out, _ = run(capsys, "compare", "--db", tmp_path / "a.db", "--db", tmp_path / "b.db")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 5  # header, three spans, total
    assert [re.split(r"\s{2,}", line)[0] for line in lines[1:]] == ["a|b", "r q", "x ::error::pwn", "total"]
    status, out, _ = run(capsys, "history", "--db", tmp_path / "b.db")
    assert status == 0 and len(out.splitlines()) == 3 and "x ::error::pwn" in out
