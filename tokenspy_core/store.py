"""Persistence: every finished call as one row of an SQLite file (stdlib `sqlite3` only).

The LLM path only appends the record to an in-memory queue; a daemon writer thread commits the
queue every `FLUSH_INTERVAL_S` in one transaction. So:

- a clean exit loses nothing: `atexit`, a SIGTERM handler (main thread, only if SIGTERM still has its
  default action; it flushes, then dies by SIGTERM as before) and multiprocessing's exit finalizers
  all end the calls still open (`at_exit.end_open_calls`) and flush;
- `kill -9` (or `os._exit`) loses at most the records of the last flush interval plus one write;
- several processes can share one file: WAL mode, `BEGIN IMMEDIATE`, a busy timeout and retries.
  A forked child (web workers, multiprocessing) drops its copy of the parent's queue and connection
  and opens its own.

The schema is versioned by `PRAGMA user_version` and a `meta` table; `MIGRATIONS[v]` upgrades
version v to v + 1. `load_records` rebuilds `CallRecord`s that a `Tracker` replays into the very
stats and box the recording process showed.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from ._guard import log_internal_error, logger
from .at_exit import end_open_calls
from .call import CallRecord, _prompt_json, config
from .pricing import FEMTO_PER_USD
from .tracker import Tracker

__all__ = [
    "DEFAULT_PATH", "ENV_VAR", "FLUSH_INTERVAL_S", "MIGRATIONS", "NotATokenspyDatabase", "SchemaTooNew",
    "Store", "StoreError", "attach_store", "close_all", "detach_store", "iter_records", "load_records",
    "resolve_path", "schema_version", "stores",
]

FLUSH_INTERVAL_S = 0.5
DEFAULT_PATH = "~/.tokenspy/usage.db"
ENV_VAR = "TOKENSPY_DB"
SPAN_SEPARATOR = " / "
BUSY_TIMEOUT_S = 5.0        # sqlite waits this long for another process's write lock ...
WRITE_ATTEMPTS = 3          # ... and we retry that many times before keeping the batch for later
MAX_BATCH = 2_000           # rows per transaction (~0.1 s): bounds how long other processes wait
MAX_PENDING = 1_000_000     # an unwritable file must not grow memory forever: drop oldest beyond this
_SIGNAL_FLUSH_TIMEOUT_S = 5.0
_SIGNAL_END_TIMEOUT_S = 3.0  # ending the open calls at SIGTERM (a tokenizer load, a heap pass) waits no longer
_INT64 = 2**63


class StoreError(Exception):
    """The file cannot be used as a tokenspy database."""


class NotATokenspyDatabase(StoreError):
    pass


class SchemaTooNew(StoreError):
    pass


# -- schema -----------------------------------------------------------------------------------------

_COLUMNS = (
    "ts", "model", "provider", "request_model", "operation",
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
    "reasoning_tokens", "total_tokens", "cost_usd", "cost_femto",
    "usage_source", "estimated_fields", "streamed", "partial", "status", "error", "cache_hit",
    "span_path", "span_path_json", "span_kinds_json", "latency_s", "ttft_s",
    "tags", "git_commit", "pid", "host", "prompt", "response",
)
_INSERT = f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM calls"


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
        ("format", "tokenspy"), ("created_at", datetime.now().astimezone().isoformat(timespec="seconds")),
    ])
    conn.execute("""
        CREATE TABLE calls (
            id                    INTEGER PRIMARY KEY,
            ts                    REAL NOT NULL,     -- call start, unix epoch seconds
            model                 TEXT,              -- the priced (served) model
            provider              TEXT,
            request_model         TEXT,
            operation             TEXT NOT NULL,
            input_tokens          INTEGER NOT NULL,  -- cached and cache-write tokens included
            output_tokens         INTEGER NOT NULL,  -- reasoning tokens included
            cached_input_tokens   INTEGER NOT NULL,
            cache_write_tokens    INTEGER NOT NULL,
            cache_write_1h_tokens INTEGER NOT NULL,
            reasoning_tokens      INTEGER NOT NULL,
            total_tokens          INTEGER NOT NULL,
            cost_usd              REAL,              -- NULL: unpriced
            cost_femto            INTEGER,           -- exact, 1e-15 USD
            usage_source          TEXT NOT NULL,     -- provider | estimated | mixed
            estimated_fields      TEXT NOT NULL,     -- JSON array
            streamed              INTEGER NOT NULL,
            partial               INTEGER NOT NULL,
            status                TEXT NOT NULL,     -- finished | aborted | failed
            error                 TEXT,
            cache_hit             INTEGER NOT NULL,
            span_path             TEXT NOT NULL,     -- names joined with ' / '
            span_path_json        TEXT NOT NULL,     -- JSON array of names
            span_kinds_json       TEXT NOT NULL,     -- JSON array of kinds
            latency_s             REAL NOT NULL,
            ttft_s                REAL,
            tags                  TEXT NOT NULL,     -- JSON object
            git_commit            TEXT,
            pid                   INTEGER NOT NULL,
            host                  TEXT NOT NULL,
            prompt                TEXT,              -- JSON, only with capture_content=True
            response              TEXT               -- only with capture_content=True
        )""")
    conn.execute("CREATE INDEX calls_ts ON calls (ts)")
    conn.execute("CREATE INDEX calls_git_commit ON calls (git_commit, ts)")


# MIGRATIONS[v] upgrades a version-v database to v + 1, inside the caller's transaction.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1]


def schema_version() -> int:
    """The version this tokenspy writes (read at call time so tests can register a step)."""
    return len(MIGRATIONS)


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """An explicit path wins, then `$TOKENSPY_DB`, then `~/.tokenspy/usage.db`."""
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or DEFAULT_PATH
    return Path(path).expanduser().resolve()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _retry_busy(action: Callable[[], None]) -> None:
    for attempt in range(WRITE_ATTEMPTS):
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or attempt == WRITE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2**attempt)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _check(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; raises if it is not ours or too new. 0 = a fresh, empty file."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = _tables(conn)
        ours = "meta" in tables and conn.execute(
            "SELECT value FROM meta WHERE key = 'format'").fetchone() == ("tokenspy",)
    except sqlite3.DatabaseError as exc:  # "file is not a database", a foreign meta table
        raise NotATokenspyDatabase(f"{path} is not a tokenspy database ({exc})") from None
    if version == 0 and not tables:
        return 0
    if not ours:
        raise NotATokenspyDatabase(f"{path} is not a tokenspy database (an SQLite file with other tables)")
    if version > schema_version():
        raise SchemaTooNew(f"{path} has schema version {version}, newer than this tokenspy understands "
                           f"({schema_version()}): upgrade tokenspy")
    return version


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _check(conn, path) == schema_version():
        return

    def upgrade() -> None:
        conn.execute("BEGIN IMMEDIATE")  # re-read under the write lock: another process may have done it
        try:
            version = _check(conn, path)
            for step in range(version, schema_version()):
                MIGRATIONS[step](conn)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(schema_version()),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    _retry_busy(upgrade)


def _enable_wal(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # another connection held the file: sqlite kept the old mode
        raise sqlite3.OperationalError(f"database is locked (journal mode still {mode})")


def _connect_writer(path: Path) -> sqlite3.Connection:
    if not path.parent.exists():
        # Prompts may end up here (capture_content): keep a directory we create private.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        _check(conn, path)  # before any PRAGMA that would write to a foreign file
        _retry_busy(lambda: _enable_wal(conn))
        # WAL + NORMAL: a commit survives the process being killed; only an OS crash or power loss
        # can lose the last commits. FULL would fsync every batch for no gain against kill -9.
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection. A reader never writes the file: an empty file is refused, not initialized
    (only `init(persist=...)` makes a database), and an older schema is upgraded in a copy in memory,
    never in place (an older tokenspy still writing to the file would stop at a version it does not know)."""
    if not path.is_file():
        raise FileNotFoundError(f"no tokenspy database at {path}")
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        version = _check(conn, path)
        if version == 0:
            what = "an empty file" if path.stat().st_size == 0 else "an SQLite file without tokenspy's tables"
            raise NotATokenspyDatabase(f"{path} is not a tokenspy database ({what})")
        if version < schema_version():
            conn = _upgraded_copy(conn, version)
    except BaseException:
        conn.close()
        raise
    return conn


def _upgraded_copy(conn: sqlite3.Connection, version: int) -> sqlite3.Connection:
    """The database of `conn` copied into memory and migrated there; closes `conn`."""
    copy = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.backup(copy)
        conn.close()
        copy.execute("BEGIN")
        for step in range(version, schema_version()):
            MIGRATIONS[step](copy)
        copy.execute("COMMIT")
    except BaseException:
        copy.close()
        raise
    return copy


# -- rows <-> records --------------------------------------------------------------------------------

# The prompts' encoding is the one `prompt_hash` hashes: a prompt read back hashes as the live one did.
_encode = _prompt_json
_EMPTY = "[]"
# Span paths, kinds and estimated-field lists repeat (bounded by the program's distinct paths):
# encode and decode each distinct one once. Cleared if a pathological program makes too many.
_CACHE_LIMIT = 4096
_encoded: dict[tuple[str, ...], str] = {}
_decoded: dict[str, tuple[str, ...]] = {}


def _tuple_json(names: tuple[str, ...]) -> str:
    if not names:
        return _EMPTY
    text = _encoded.get(names)
    if text is None:
        if len(_encoded) >= _CACHE_LIMIT:
            _encoded.clear()
        text = _encoded[names] = _encode(list(names))
    return text


def _json_tuple(text: str) -> tuple[str, ...]:
    names = _decoded.get(text)
    if names is None:
        if len(_decoded) >= _CACHE_LIMIT:
            _decoded.clear()
        names = _decoded[text] = tuple(json.loads(text))
    return names


def _row(record: CallRecord, capture: bool, pid: int, host: str) -> tuple[Any, ...]:
    tags = record.tags
    commit = tags.get("git_commit")
    femto = record.cost_femto
    # SQLite integers are 64-bit: a (theoretical) call over $9,223 keeps only its REAL cost.
    femto_col = femto if femto is None or -_INT64 <= femto < _INT64 else None
    return (
        record.started_at, record.model, record.provider, record.request_model, record.operation,
        record.input_tokens, record.output_tokens, record.cached_input_tokens, record.cache_write_tokens,
        record.cache_write_1h_tokens, record.reasoning_tokens, record.total_tokens,
        None if femto is None else femto / FEMTO_PER_USD, femto_col,
        record.usage_source, _tuple_json(record.estimated_fields), int(record.streamed), int(record.partial),
        record.status, record.error, int(record.cache_hit),
        SPAN_SEPARATOR.join(record.span_path), _tuple_json(record.span_path), _tuple_json(record.span_kinds),
        record.latency_s, record.ttft_s, (_content(dict(tags), _encode) or "{}") if tags else "{}",
        None if commit is None else str(commit), pid, host,
        _content(record.prompt, _encode) if capture and record.prompt is not None else None,
        _content(record.response, str) if capture and record.response is not None else None,
    )


def _content(value: Any, encode: Callable[[Any], str]) -> str | None:
    """A captured prompt or response, or a record's tags, as SQLite text. One it cannot hold (a dict with
    int and str keys, a lone surrogate) is stored as near as it can be, never failing the batch of rows
    it is written in (nor, retried, every batch after it)."""
    try:
        text = encode(value)
    except (TypeError, ValueError, RecursionError):
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return None
    return text.encode("utf-8", "replace").decode("utf-8")


def _record(row: tuple[Any, ...]) -> CallRecord:
    (id_, ts, model, provider, request_model, operation, input_tokens, output_tokens, cached_input_tokens,
     cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, total_tokens, cost_usd, femto, usage_source,
     estimated_fields, streamed, partial, status, error, cache_hit, _span_path_text, span_path, span_kinds,
     latency_s, ttft_s, tags, _git_commit, _pid, _host, prompt, response) = row
    if femto is None and cost_usd is not None:
        femto = round(cost_usd * FEMTO_PER_USD)
    return CallRecord(
        id=id_, model=model, provider=provider, input_tokens=input_tokens, output_tokens=output_tokens,
        cached_input_tokens=cached_input_tokens, cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens, total_tokens=total_tokens, cost_femto=femto,
        usage_source=usage_source, streamed=bool(streamed), partial=bool(partial), status=status, error=error,
        span_path=_json_tuple(span_path), span_kinds=_json_tuple(span_kinds), latency_s=latency_s,
        ttft_s=ttft_s, started_at=ts, request_model=request_model, operation=operation,
        cache_hit=bool(cache_hit), estimated_fields=_json_tuple(estimated_fields),
        cache_write_1h_tokens=cache_write_1h_tokens, tags=json.loads(tags) if tags != "{}" else {},
        prompt=None if prompt is None else json.loads(prompt), response=response,
    )


def _since_epoch(since: float | datetime | None) -> float | None:
    if isinstance(since, datetime):
        return since.timestamp()  # a naive datetime is local time, as everywhere in Python
    return since


def iter_records(path: str | os.PathLike[str] | None = None, *, since: float | datetime | None = None,
                 commit: str | None = None, limit: int | None = None) -> Iterator[CallRecord]:
    """Stored calls in time order. `since`: epoch seconds or datetime; `commit`: a (prefix of a) git
    commit; `limit`: only the most recent N. Raises FileNotFoundError, NotATokenspyDatabase, SchemaTooNew."""
    resolved = resolve_path(path)
    where: list[str] = []
    params: list[Any] = []
    cutoff = _since_epoch(since)
    if cutoff is not None:
        where.append("ts >= ?")
        params.append(cutoff)
    if commit:
        where.append("substr(git_commit, 1, ?) = ?")
        params += [len(commit), commit.lower()]
    sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY ts DESC, id DESC LIMIT {int(limit)})"
    sql += " ORDER BY ts, id"
    conn = _connect_reader(resolved)
    try:
        for row in conn.execute(sql, params):
            yield _record(row)
    finally:
        conn.close()


def load_records(path: str | os.PathLike[str] | None = None, since: float | datetime | None = None,
                 commit: str | None = None, *, limit: int | None = None) -> list[CallRecord]:
    """Stored calls, ready to replay: `t = Tracker(); for r in records: t.add(r)`."""
    return list(iter_records(path, since=since, commit=commit, limit=limit))


# -- the store --------------------------------------------------------------------------------------

class Store:
    """Persists every record a tracker sees. Use `attach_store`; `close()` detaches it."""

    def __init__(self, tracker: Tracker, path: Path, *, flush_interval: float = FLUSH_INTERVAL_S) -> None:
        if not 0 < flush_interval <= 1:
            raise ValueError(f"flush_interval must be in (0, 1] seconds, got {flush_interval!r}")
        self.path = path
        self.tracker = tracker
        self.flush_interval = flush_interval
        self.rows_written = 0
        self.dropped = 0
        self._host = socket.gethostname()
        self._closed = False
        self._conn: sqlite3.Connection | None = _connect_writer(path)  # fail in init(), not later
        self._reset_process_state()
        self._unsubscribe = tracker.subscribe(self._on_record)
        self._start_writer()

    def _reset_process_state(self) -> None:
        """Everything that must not cross a fork: locks, the queue, the thread (and the connection)."""
        self._pid = os.getpid()
        self._pending: deque[tuple[CallRecord, bool]] = deque()
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _after_fork_in_child(self) -> None:
        # The parent flushes its own queue; the inherited connection belongs to the parent (SQLite
        # connections must not be used across fork, closing included): keep it referenced so garbage
        # collection does not close it, and open a new one lazily.
        if self._conn is not None:
            _inherited_connections.append(self._conn)
        self._conn = None
        self._reset_process_state()

    # -- the caller's path: O(1) -----------------------------------------------------------------
    def _on_record(self, record: CallRecord) -> None:
        if self._closed:
            return
        # Decide about content now: capture_content may change before the writer runs.
        self._pending.append((record, config.capture_content))
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.error("tokenspy: cannot write to %s fast enough; dropping the oldest unsaved records",
                             self.path)
        if self._thread is None:
            self._start_writer()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- writing ---------------------------------------------------------------------------------
    def _start_writer(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"tokenspy-store-writer:{self.path.name}",
                                      daemon=True)  # daemon: never keeps a program alive; atexit flushes
            self._thread = thread
            thread.start()

    def _run(self) -> None:
        stop = self._stop
        failing = False
        while not stop.wait(self.flush_interval):
            try:
                self._drain()
            except Exception as exc:  # the batch stays queued for the next round; the writer lives on
                if not failing:  # once per failure streak, not twice a second
                    logger.warning("tokenspy: writing to %s failed, will retry: %s", self.path, exc)
                failing = True
            else:
                if failing:
                    logger.warning("tokenspy: writing to %s works again", self.path)
                failing = False

    def flush(self) -> int:
        """Write every pending record now, in the calling thread. Returns the number of rows written."""
        return self._drain()

    def _drain(self, timeout: float = -1) -> int:
        if self._write_owner == threading.get_ident():
            return 0  # a signal handler interrupted this thread mid-write: the connection is busy
        if not self._write_lock.acquire(timeout=timeout):
            return 0
        self._write_owner = threading.get_ident()
        try:
            written = 0
            while self._pending:
                batch: list[tuple[CallRecord, bool]] = []
                try:
                    while len(batch) < MAX_BATCH:
                        batch.append(self._pending.popleft())
                except IndexError:
                    pass
                try:
                    self._write(batch)
                except BaseException:
                    self._pending.extendleft(reversed(batch))  # not lost: retried at the next flush
                    raise
                written += len(batch)
            self.rows_written += written
            return written
        finally:
            self._write_owner = None
            self._write_lock.release()
            _deliver_deferred_signal()  # SIGTERM came in during this write: now it is on disk

    def _write(self, batch: list[tuple[CallRecord, bool]]) -> None:
        if self._conn is None:
            self._conn = _connect_writer(self.path)
        conn = self._conn
        pid, host = os.getpid(), self._host
        rows = [_row(record, capture, pid, host) for record, capture in batch]

        def insert() -> None:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on upgrade
            try:
                try:
                    conn.executemany(_INSERT, rows)
                except (OverflowError, sqlite3.InterfaceError):
                    # A row SQLite cannot bind (a number past 64 bits) would fail its whole batch at every
                    # retry, and hold back every record after it: the others are written, that one logged.
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    for row in rows:
                        try:
                            conn.execute(_INSERT, row)
                        except (OverflowError, sqlite3.InterfaceError) as exc:
                            log_internal_error("store row", exc)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        _retry_busy(insert)

    def close(self) -> None:
        """Stop recording, write what is pending, close the file. Idempotent."""
        if self._closed:
            self._deregister()
            return
        self._closed = True
        self._unsubscribe()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=BUSY_TIMEOUT_S * WRITE_ATTEMPTS)
        try:
            self._drain()
        except Exception as exc:
            log_internal_error("store close", exc)
        finally:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            # Only now: a SIGTERM that comes while this close waits or writes (a multiprocessing worker
            # leaving as its pool is terminated) flushes the stores it finds, and this one is not written yet.
            self._deregister()
            _maybe_restore_sigterm()

    def _deregister(self) -> None:
        with _registry_lock:
            for key, store in list(_stores.items()):
                if store is self:
                    del _stores[key]

    def __repr__(self) -> str:
        return f"<tokenspy Store {str(self.path)!r}: {self.rows_written} written, {self.pending} pending>"


# -- registry and process hooks ----------------------------------------------------------------------

_stores: dict[tuple[Path, int], Store] = {}
# Re-entrant: the SIGTERM handler runs in the main thread, possibly while it is inside attach_store.
_registry_lock = threading.RLock()
_hooks_pid: int | None = None
_inherited_connections: list[sqlite3.Connection] = []
_deferred_signal: int | None = None
_mp_hooked_pid: int | None = None
_mp_finalizer: Any = None  # the multiprocessing.util.Finalize that ends and flushes at a child's exit
_mp_after_fork_hooked = False  # inherited by a forked child, as multiprocessing's after-fork registry is
_mp_anchor = type("_MpAnchor", (), {})()  # multiprocessing's after-fork registry holds weak refs
_exited_pid: int | None = None


def attach_store(tracker: Tracker, path: str | os.PathLike[str] | None = None, *,
                 flush_interval: float = FLUSH_INTERVAL_S) -> Store:
    """Persist every record `tracker` sees to `path` (see `resolve_path`). Idempotent per path."""
    resolved = resolve_path(path)
    if resolved.is_dir():
        raise ValueError(f"persist must be a database file path, got the directory {str(resolved)!r}")
    key = (resolved, id(tracker))  # the store holds the tracker, so its id cannot be reused meanwhile
    with _registry_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(tracker, resolved, flush_interval=flush_interval)
    _install_process_hooks()
    return store


def detach_store(store: Store | str | os.PathLike[str] | None = None, tracker: Tracker | None = None) -> None:
    """Close a store (or every store writing to that path, of `tracker` if given)."""
    if isinstance(store, Store):
        store.close()
        return
    resolved = resolve_path(store)
    with _registry_lock:
        matches = [s for (p, t), s in _stores.items()
                   if p == resolved and (tracker is None or t == id(tracker))]
    for match in matches:
        match.close()


def stores() -> list[Store]:
    with _registry_lock:
        return list(_stores.values())


def close_all() -> None:
    for store in stores():
        store.close()


def _flush_all(timeout: float = -1) -> None:
    for store in stores():
        try:
            store._drain(timeout)
        except Exception as exc:
            logger.error("tokenspy: could not write pending records to %s: %s", store.path, exc)


def _end_open_calls() -> None:
    try:
        end_open_calls()
    except Exception as exc:  # strict mode re-raises; at exit a log line is all we can give
        logger.error("tokenspy: could not end the calls still open at exit: %s", exc)


def _at_exit() -> None:
    """The exit of a process: from atexit, or from multiprocessing's exit finalizer in its children (they
    leave through os._exit, skipping atexit): once per process."""
    global _exited_pid
    if _exited_pid == os.getpid():
        return
    _exited_pid = os.getpid()
    _end_open_calls()
    for store in stores():
        try:
            store.close()
        except Exception as exc:  # strict mode re-raises; at exit a log line is all we can give
            logger.error("tokenspy: could not close %s: %s", store.path, exc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _deferred_signal
    me = threading.get_ident()
    if any(store._write_owner == me for store in stores()):
        # We interrupted this very thread in the middle of a write (an exit-time flush, say): let it
        # commit; its `_drain` then calls `_terminate`.
        _deferred_signal = signum
        return
    _terminate(signum)


def _deliver_deferred_signal() -> None:
    global _deferred_signal
    signum = _deferred_signal
    if signum is not None and threading.current_thread() is threading.main_thread():
        _deferred_signal = None
        _terminate(signum)


def _terminate(signum: int) -> None:
    # End the calls still open (as a clean exit does: a stream being read is saved aborted, partial),
    # flush, then behave exactly as if we had never been here: the default action (die by SIGTERM).
    _end_open_calls_within(_SIGNAL_END_TIMEOUT_S)
    _flush_all(_SIGNAL_FLUSH_TIMEOUT_S)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only reached if SIGTERM is blocked in this thread


def _end_open_calls_within(timeout: float) -> None:
    # In a thread, waited for at most `timeout`: the code the signal interrupted may hold a lock that ending
    # a call takes (the tokenizer's first load, an adapter's table); in the handler itself that would
    # wait forever, and the process would never die by the SIGTERM it was sent.
    ender = threading.Thread(target=_end_open_calls, name="tokenspy-end-open-calls", daemon=True)
    try:
        ender.start()
    except RuntimeError:  # the interpreter is exiting: its atexit hook ends them
        return
    ender.join(timeout)


def _maybe_restore_sigterm() -> None:
    if stores() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _install_sigterm() -> None:
    # Never replace a handler the program (or its framework: gunicorn, uvicorn) installed: those exit
    # through sys.exit, and atexit flushes then.
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _hook_multiprocessing() -> None:
    """multiprocessing children (fork, forkserver) leave through os._exit, skipping atexit: end the open
    calls and flush in their exit finalizers, as atexit would."""
    global _mp_hooked_pid, _mp_finalizer
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None:
        return
    _hook_mp_after_fork(mp_util)
    # A finalizer inherited through fork is ignored in the child, and a child's bootstrap clears every
    # finalizer registered before it: a spawn or forkserver child imports __main__ (and so runs init())
    # before that.
    if _mp_hooked_pid == os.getpid() and _mp_finalizer is not None and _mp_finalizer.still_active():
        return
    _mp_hooked_pid = os.getpid()
    _mp_finalizer = mp_util.Finalize(None, _mp_exit, exitpriority=100)


def _mp_exit() -> None:
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is None:
        # The main process: its atexit hook runs later (after atexit hooks registered after ours, which may
        # still record), and ends the open calls then.
        _flush_all()
        return
    _at_exit()  # a child: os._exit (fork, forkserver) or the same exit sys.exit gives (spawn) follows


def _hook_mp_after_fork(mp_util: Any) -> None:
    # A multiprocessing child's bootstrap clears the finalizers, then runs the after-fork callbacks
    # (fork, spawn and forkserver alike): register the exit finalizer again there.
    global _mp_after_fork_hooked
    if not _mp_after_fork_hooked:
        _mp_after_fork_hooked = True
        mp_util.register_after_fork(_mp_anchor, lambda _: _hook_multiprocessing())


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.RLock()  # may have been held by another thread at fork time
    for store in list(_stores.values()):
        store._after_fork_in_child()
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _stores:
        _hook_mp_after_fork(mp_util)  # multiprocessing may have been imported only after init()


def _install_process_hooks() -> None:
    global _hooks_pid
    _install_sigterm()
    _hook_multiprocessing()
    if _hooks_pid is None:  # atexit and fork hooks are inherited by forked children: once per program
        _hooks_pid = os.getpid()
        atexit.register(_at_exit)
        # Calls still open at exit are estimated then (`at_exit`), with tiktoken, whose first import
        # imports this module, which registers a threading exit hook: refused once the interpreter's exit
        # has begun. Imported now, it is there then.
        import concurrent.futures.thread  # noqa: F401
        os.register_at_fork(after_in_child=_after_fork_in_child)
