"""Records survive SQLite exactly: tokens, femto-dollar costs, span paths, tags, flags; replay = live."""

from __future__ import annotations

import dataclasses
import enum
import shutil
import sqlite3
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tokenspy
from tokenspy_core import Tracker, config, default_tracker
from tokenspy_core import start_call as core_start_call
from tokenspy_core.store import (
    FLUSH_INTERVAL_S,
    attach_store,
    detach_store,
    load_records,
    resolve_path,
    stores,
)


def make_calls() -> None:
    """One of each kind of record: nested spans, tags at three levels, cache, reasoning, partial,
    failed, estimated, cache hit, unpriced."""
    tokenspy.set_price("gpt-4o", input=2.5, output=10, cached_input=1.25)
    tokenspy.set_price("claude-x", input=3, output=15, cached_input=0.3, cache_write=3.75)

    @tokenspy.profile(tags={"feature": "search"})
    def retrieve() -> None:
        tokenspy.record("gpt-4o", input_tokens=1200, output_tokens=300, cached_input_tokens=1000,
                        provider="openai")

    @tokenspy.profile
    def answer() -> None:
        retrieve()
        tokenspy.record("claude-x", input_tokens=5000, output_tokens=700, cached_input_tokens=3000,
                        cache_write_tokens=1000, reasoning_tokens=200, provider="anthropic",
                        tags={"attempt": 2})
        prompt = [{"role": "user", "content": "hi there"}]
        call = tokenspy.start_call("gpt-4o", provider="openai", prompt=prompt)
        call.add_text("Hello")
        call.add_text(" world")
        call.abort()  # streamed, stopped early: partial, estimated
        failed = tokenspy.start_call("gpt-4o", prompt="q", stream=False)
        failed.fail(ConnectionError("rate limited"))

    with tokenspy.session("chat", tags={"user": "bob"}):
        answer()
    hit = core_start_call(None, "gpt-4o", provider="openai")
    hit.set_cache_hit()
    hit.set_usage(input_tokens=5, output_tokens=1)
    hit.finish()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenspy.record("mystery-model-xyz", input_tokens=10, output_tokens=2)


def without_calls(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "calls"}


def test_round_trip_keeps_every_field_exactly(db: Path) -> None:
    store = attach_store(default_tracker(), db)
    make_calls()
    store.flush()
    live = default_tracker().calls()
    loaded = load_records(db)
    assert len(loaded) == len(live) == 6
    for original, back in zip(live, loaded, strict=True):
        # id: the row id (unique across processes); span_id: a live object's id, meaningless later.
        assert dataclasses.replace(back, id=original.id, span_id=original.span_id) == original
    by_model = {r.model: r for r in loaded}
    claude = by_model["claude-x"]
    assert claude.span_path == ("chat", "answer") and claude.span_kinds == ("session", "function")
    assert claude.tags == {"user": "bob", "attempt": 2}
    assert claude.cost_femto == 5000 * 0 + 1000 * 3_000_000_000 + 3000 * 300_000_000 + 1000 * 3_750_000_000 \
        + 700 * 15_000_000_000
    partial, failed = (r for r in loaded if r.model == "gpt-4o" and r.status != "finished")
    assert partial.partial and partial.status == "aborted" and partial.usage_source == "estimated"
    assert partial.estimated_fields == ("input_tokens", "output_tokens") and partial.streamed
    assert failed.status == "failed" and failed.error == "ConnectionError: rate limited" and not failed.partial
    assert [r.cache_hit for r in loaded].count(True) == 1
    assert by_model["mystery-model-xyz"].cost_femto is None


def test_replayed_tracker_gives_the_same_stats_and_box(db: Path) -> None:
    store = attach_store(default_tracker(), db)
    make_calls()
    store.flush()
    replay = Tracker()
    for record in load_records(db):
        replay.add(record)
    assert without_calls(replay.stats()) == without_calls(default_tracker().stats())
    assert replay.render("text") == default_tracker().render("text")


def test_plain_columns_hold_exact_and_readable_values(db: Path) -> None:
    store = attach_store(default_tracker(), db)
    make_calls()
    store.flush()
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT span_path, span_path_json, cost_femto, typeof(cost_femto), cost_usd, "
                           "typeof(cost_usd), tags, total_tokens, streamed, partial FROM calls "
                           "WHERE model = 'claude-x'").fetchone()
    assert row == ("chat / answer", '["chat", "answer"]', 18_150_000_000_000, "integer", 0.01815, "real",
                   '{"attempt": 2, "user": "bob"}', 5700, 0, 0)


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 command-line tool is not installed")
def test_file_is_readable_with_the_sqlite3_tool(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    store = attach_store(default_tracker(), db)
    with tokenspy.session("batch"):
        tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)
    store.flush()
    out = subprocess.run(["sqlite3", str(db), "SELECT model, input_tokens, cost_femto, span_path FROM calls"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    assert out.strip() == "gpt-4o|1000|3500000000000|batch"


def test_prompts_and_responses_are_not_stored_by_default(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    store = attach_store(default_tracker(), db)
    with tokenspy.start_call("gpt-4o", prompt="secret prompt") as call:
        call.add_text("secret answer")
        call.set_usage(input_tokens=3, output_tokens=2)
    store.flush()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT prompt, response FROM calls").fetchall() == [(None, None)]
    on_disk = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # with -wal
    assert b"secret" not in on_disk


def test_prompts_and_responses_are_stored_with_capture_content(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    tokenspy.init(persist=db, capture_content=True)
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    with tokenspy.start_call("gpt-4o", prompt=prompt) as call:
        call.add_text("4")
        call.set_usage(input_tokens=12, output_tokens=1)
    stores()[0].flush()
    [record] = load_records(db)
    assert record.prompt == prompt and record.response == "4"


def test_a_whole_answer_and_framework_messages_are_stored_with_capture_content(db: Path) -> None:
    # A non-streamed answer is handed over whole (not as streamed text), and framework message objects
    # (LangChain's `type`, LlamaIndex's enum `role`) are stored as the role/content dicts the SDKs send.
    class Role(str, enum.Enum):  # noqa: UP042 - shaped as LlamaIndex's MessageRole
        SYSTEM = "system"

    @dataclass
    class Message:
        content: str
        type: str | None = None
        role: Role | None = None

    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    tokenspy.init(persist=db, capture_content=True)
    prompt = [Message("Be brief.", role=Role.SYSTEM), Message("What is 2+2?", type="human")]
    with tokenspy.start_call("gpt-4o", prompt=prompt) as call:
        call.set_response_text(lambda: "4")
        call.set_usage(input_tokens=12, output_tokens=1)
    stores()[0].flush()
    [record] = load_records(db)
    assert record.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    assert record.response == "4"


def test_attach_is_idempotent_per_path(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    first = attach_store(default_tracker(), db)
    tokenspy.init(persist=db)
    tokenspy.init(persist=str(db))
    assert stores() == [first]
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    first.flush()
    assert len(load_records(db)) == 1


def test_init_with_an_empty_persist_path_is_an_error_not_off(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # persist=os.environ.get("APP_DB", "") with the variable unset: say so, do not quietly store nothing.
    monkeypatch.chdir(tmp_path)
    tokenspy.init(capture_content=True)
    with pytest.raises(ValueError, match=r"^persist must be .* got an empty path ''$"):
        tokenspy.init(persist="")
    assert stores() == [] and config.capture_content is True  # the earlier setup is left whole
    assert list(tmp_path.iterdir()) == []


def test_close_flushes_and_unsubscribes(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    store = attach_store(default_tracker(), db)
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    store.close()
    store.close()  # idempotent
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    assert len(load_records(db)) == 1 and stores() == []
    attach_store(default_tracker(), db)
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    detach_store(db)  # by path
    assert len(load_records(db)) == 2 and stores() == []


def test_writer_thread_commits_within_the_flush_interval(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    attach_store(default_tracker(), db)
    latencies = []
    for _ in range(3):
        before = len(load_records(db))
        tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
        started = time.monotonic()
        while len(load_records(db)) == before:
            assert time.monotonic() - started < FLUSH_INTERVAL_S + 0.5, "not written in the flush interval"
            time.sleep(0.01)
        latencies.append(time.monotonic() - started)
    assert max(latencies) <= FLUSH_INTERVAL_S + 0.5


def test_filters_since_commit_and_limit(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    store = attach_store(default_tracker(), db)
    for i in range(6):
        tokenspy.record("gpt-4o", input_tokens=i + 1, output_tokens=1,
                        tags={"git_commit": "a" * 40 if i < 3 else "b" * 40})
    store.flush()
    with sqlite3.connect(db) as conn:  # the first two calls were made ten days ago
        conn.execute("UPDATE calls SET ts = ts - 10 * 86400 WHERE input_tokens <= 2")
    week_ago = time.time() - 7 * 86400
    assert [r.input_tokens for r in load_records(db, since=week_ago)] == [3, 4, 5, 6]
    assert [r.input_tokens for r in load_records(db, commit="AAAA")] == [1, 2, 3]
    assert [r.input_tokens for r in load_records(db, commit="b" * 40, since=week_ago)] == [4, 5, 6]
    assert [r.input_tokens for r in load_records(db, limit=2)] == [5, 6]
    assert load_records(db, commit="c") == []


def test_path_precedence_explicit_then_env_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TOKENSPY_DB", raising=False)
    assert resolve_path() == home / ".tokenspy" / "usage.db"
    monkeypatch.setenv("TOKENSPY_DB", str(tmp_path / "env.db"))
    assert resolve_path() == tmp_path / "env.db"
    assert resolve_path(tmp_path / "explicit.db") == tmp_path / "explicit.db"

    tokenspy.init(persist=True)
    assert [s.path for s in stores()] == [tmp_path / "env.db"]
    monkeypatch.delenv("TOKENSPY_DB")
    tokenspy.init(persist=True)
    assert (home / ".tokenspy" / "usage.db").is_file()
    assert (home / ".tokenspy").stat().st_mode & 0o777 == 0o700


def test_track_git_tags_records_with_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                db: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / "repo" / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "repo" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "repo" / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    monkeypatch.chdir(tmp_path / "repo")
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    tokenspy.init(persist=db, track_git=True, tags={"user": "ann"})
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    stores()[0].flush()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT git_commit, tags FROM calls").fetchone() == (
            sha, f'{{"git_commit": "{sha}", "user": "ann"}}')
    assert config.tags["git_commit"] == sha


@pytest.mark.parametrize("odd_prompt", [{"k": "v", 1: "an int key"}, "a lone surrogate \ud800 here"],
                         ids=["mixed-keys", "surrogate"])
def test_a_prompt_the_database_cannot_hold_as_is_loses_no_row(db: Path, odd_prompt: Any) -> None:
    tokenspy.init(persist=str(db), capture_content=True)
    tokenspy.set_price("gpt-4o", input=1, output=1)
    for prompt in ["first", odd_prompt, "last"]:
        call = tokenspy.start_call("gpt-4o", prompt=prompt)
        call.set_usage(input_tokens=1, output_tokens=1)
        call.finish()
    for store in stores():
        store.flush()
    rows = load_records(db)
    assert len(rows) == 3
    assert [r.prompt for r in rows][0::2] == ["first", "last"]


def test_a_row_sqlite_cannot_hold_does_not_hold_back_the_others(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A number past 64 bits failed its whole batch at every flush, and every record after it stayed
    # pending. Token counts are bounded at the API (MAX_TOKENS); this is the store's own guard.
    monkeypatch.delenv("TOKENSPY_STRICT", raising=False)
    db = tmp_path / "usage.db"
    tracker = default_tracker()
    store = attach_store(tracker, db)
    first = tokenspy.record("gpt-4o", input_tokens=10, output_tokens=1)
    assert first is not None
    tracker.add(dataclasses.replace(first, id=first.id + 1000, input_tokens=2**70))
    tokenspy.record("gpt-4o", input_tokens=20, output_tokens=2)
    store.flush()
    assert store.pending == 0
    assert [r.input_tokens for r in load_records(db)] == [10, 20]


def test_tags_json_cannot_sort_are_stored_without_holding_back_the_batch(db: Path) -> None:
    # Mixed key types: the sorted JSON encoder raised, and the batch (and all after it) stayed pending.
    store = attach_store(default_tracker(), db)
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=0)
    tokenspy.record("gpt-4o", input_tokens=2, output_tokens=0, tags={1: "x", "env": "prod"})
    tokenspy.record("gpt-4o", input_tokens=3, output_tokens=0)
    store.flush()
    loaded = load_records(db)
    assert [r.input_tokens for r in loaded] == [1, 2, 3]
    assert loaded[1].tags == {"1": "x", "env": "prod"}
