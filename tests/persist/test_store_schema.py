"""The file format: WAL, versioned schema with migrations, refusal of files that are not ours."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import tokenspy
from tokenspy_core import default_tracker, store
from tokenspy_core.store import NotATokenspyDatabase, SchemaTooNew, attach_store, load_records


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def test_new_file_is_wal_with_versioned_schema(db: Path) -> None:
    attach_store(default_tracker(), db).close()
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "user_version") == store.schema_version() == 1
    assert meta(db)["format"] == "tokenspy" and meta(db)["schema_version"] == "1"


def test_v0_fixture_an_empty_file_is_initialized(db: Path) -> None:
    db.write_bytes(b"")  # what `touch usage.db` or a crashed first start leaves behind
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    st = attach_store(default_tracker(), db)
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    st.flush()
    assert pragma(db, "user_version") == 1 and len(load_records(db)) == 1


def test_a_registered_migration_step_upgrades_an_existing_v1_file(db: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    st = attach_store(default_tracker(), db)
    tokenspy.record("gpt-4o", input_tokens=7, output_tokens=1)
    st.close()

    def v1_to_v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE calls ADD COLUMN region TEXT NOT NULL DEFAULT 'eu'")

    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, v1_to_v2])
    before = db.read_bytes()
    [record] = load_records(db)  # a reader reads an older file through an upgraded copy in memory ...
    assert record.input_tokens == 7
    # ... and leaves the file as it was: an older tokenspy may still be writing to it
    assert db.read_bytes() == before and pragma(db, "user_version") == 1 and meta(db)["schema_version"] == "1"
    st = attach_store(default_tracker(), db)  # a writer upgrades it in place
    assert pragma(db, "user_version") == 2 and meta(db)["schema_version"] == "2"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT region FROM calls").fetchall() == [("eu",)]
    tokenspy.record("gpt-4o", input_tokens=8, output_tokens=1)
    st.flush()
    assert [r.input_tokens for r in load_records(db)] == [7, 8]


def test_reading_an_empty_file_refuses_it_and_leaves_it_untouched(db: Path) -> None:
    db.write_bytes(b"")  # notes.txt, or a file `touch`ed for a writer that never ran
    with pytest.raises(NotATokenspyDatabase, match=r"is not a tokenspy database \(an empty file\)"):
        load_records(db)
    assert db.read_bytes() == b""
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]  # no -wal, no -shm either


def test_reading_an_sqlite_file_without_tables_refuses_it(db: Path) -> None:
    sqlite3.connect(db).execute("VACUUM").connection.close()  # a valid, empty SQLite file
    with pytest.raises(NotATokenspyDatabase, match="without tokenspy's tables"):
        load_records(db)
    assert pragma(db, "user_version") == 0


def test_a_file_from_a_newer_tokenspy_is_refused(db: Path) -> None:
    attach_store(default_tracker(), db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNew, match="upgrade tokenspy"):
        attach_store(default_tracker(), db)
    with pytest.raises(SchemaTooNew):
        load_records(db)


def test_another_sqlite_database_is_refused_and_left_untouched(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    before = db.read_bytes()
    with pytest.raises(NotATokenspyDatabase):
        attach_store(default_tracker(), db)
    with pytest.raises(NotATokenspyDatabase):
        load_records(db)
    assert db.read_bytes() == before and pragma(db, "journal_mode") == "delete"


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(db: Path) -> None:
    db.write_text("hello, not a database\n" * 100)
    with pytest.raises(NotATokenspyDatabase):
        attach_store(default_tracker(), db)
    with pytest.raises(NotATokenspyDatabase):
        load_records(db)
    assert db.read_text() == "hello, not a database\n" * 100


def test_reading_a_missing_file_raises_and_creates_nothing(db: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(db)
    assert not db.exists()


def test_a_write_lock_held_elsewhere_is_waited_for_and_retried(db: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.05)  # so that retries, not only the busy wait, run
    monkeypatch.setattr(store, "WRITE_ATTEMPTS", 20)
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    st = attach_store(default_tracker(), db)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    started = time.monotonic()
    st.flush()
    assert time.monotonic() - started >= 0.2
    assert len(load_records(db)) == 1
    other.close()


def test_a_failed_write_keeps_the_records_for_the_next_flush(db: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(store, "WRITE_ATTEMPTS", 1)
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    st = attach_store(default_tracker(), db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    tokenspy.record("gpt-4o", input_tokens=2, output_tokens=1)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        st.flush()
    assert st.pending == 2
    other.execute("COMMIT")
    other.close()
    st.flush()
    assert [r.input_tokens for r in load_records(db)] == [1, 2]


def test_a_locked_file_never_blocks_the_caller(db: Path) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    st = attach_store(default_tracker(), db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the writer thread now waits for the lock (5 s busy timeout)
    time.sleep(store.FLUSH_INTERVAL_S + 0.1)
    started = time.perf_counter()
    for _ in range(200):
        tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    assert time.perf_counter() - started < 0.5  # in-memory queue only
    other.execute("COMMIT")
    other.close()
    st.flush()
    assert len(load_records(db)) == 200
