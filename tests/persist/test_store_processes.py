"""Real processes: concurrent writers lose nothing, clean exits lose nothing, kill -9 loses at most
the flush window, forked workers (web servers, multiprocessing) keep recording."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tokenspy_core.store import FLUSH_INTERVAL_S, load_records

# A committed batch is on disk once its transaction ends: allow that one write on top of the interval.
WRITE_SLACK_S = 0.05

RECORDER = """
    import sys, tokenspy
    tokenspy.set_price("m", input=1, output=2)
    tokenspy.init(persist=sys.argv[1], tags={"worker": sys.argv[2]})
    for i in range(int(sys.argv[3])):
        with tokenspy.session("job"):
            tokenspy.record("m", input_tokens=i + 1, output_tokens=1)
"""


def test_four_processes_writing_one_file_lose_nothing(db: Path, python_script: Callable[[str], list[str]],
                                                     child_env: dict[str, str]) -> None:
    argv = python_script(RECORDER)
    procs = [subprocess.Popen([*argv, str(db), str(n), "500"], env=child_env, stderr=subprocess.PIPE,
                              text=True) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    records = load_records(db)
    assert len(records) == 2000
    for n in range(4):  # every call of every worker, exactly once
        mine = sorted(r.input_tokens for r in records if r.tags["worker"] == str(n))
        assert mine == list(range(1, 501))
    assert sum(r.cost_femto or 0 for r in records) == 4 * sum(i * 10**9 + 2 * 10**9 for i in range(1, 501))


CLEAN_EXITS = {
    "end of script": "pass",
    "sys.exit": "sys.exit(3)",
    "unhandled exception": "raise RuntimeError('boom')",
    "SIGTERM": "print('ready', flush=True); time.sleep(60)",
}


@pytest.mark.parametrize("ending", list(CLEAN_EXITS))
def test_a_clean_exit_loses_nothing(ending: str, db: Path, python_script: Callable[[str], list[str]],
                                   child_env: dict[str, str], rows: Callable[[Path], int]) -> None:
    source = f"""
        import sys, time, tokenspy
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        for i in range(300):  # far less than a flush interval: all still queued at exit
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        {CLEAN_EXITS[ending]}
    """
    proc = subprocess.Popen([*python_script(source), str(db)], env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if ending == "SIGTERM":
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    expected = {"end of script": 0, "sys.exit": 3, "unhandled exception": 1,
                "SIGTERM": -signal.SIGTERM}[ending]
    assert proc.returncode == expected, err  # SIGTERM: still dies by the signal, as without tokenspy
    assert rows(db) == 300


def test_a_sigterm_handler_of_the_program_is_left_in_place(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]], rows: Callable[[Path], int]) -> None:
    proc = run("""
        import os, signal, sys, tokenspy
        def mine(signum, frame):
            sys.exit(7)  # what servers do; atexit then flushes
        signal.signal(signal.SIGTERM, mine)
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        assert signal.getsignal(signal.SIGTERM) is mine
        for i in range(50):
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    """, str(db))
    assert proc.returncode == 7, proc.stderr
    assert rows(db) == 50


def test_sigkill_loses_at_most_the_flush_window(
        db: Path, python_script: Callable[[str], list[str]], child_env: dict[str, str],
        rows: Callable[[Path], int]) -> None:
    source = """
        import sys, time, tokenspy
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        n = 0
        while True:
            tokenspy.record("m", input_tokens=1, output_tokens=1)
            n += 1
            print(n, repr(time.time()), flush=True)  # finished n calls at this time
            time.sleep(0.002)
    """
    proc = subprocess.Popen([*python_script(source), str(db)], env=child_env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(3 * FLUSH_INTERVAL_S + 0.2)
    killed_at = time.time()
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines()]
    finished = [(int(n), float(t)) for n, t in (line for line in lines if len(line) == 2)]
    must_be_on_disk = max(n for n, t in finished if t < killed_at - FLUSH_INTERVAL_S - WRITE_SLACK_S)
    on_disk = rows(db)
    assert must_be_on_disk <= on_disk <= finished[-1][0] + 1
    assert must_be_on_disk > 100  # the child really was recording for a while


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_workers_inherit_init_and_lose_nothing(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # The web-server pattern: init() in the parent, then fork workers (pre-fork servers, multiprocessing).
    proc = run("""
        import multiprocessing as mp, os, sys, tokenspy
        def work(n):
            for _ in range(n):
                tokenspy.record("m", input_tokens=1, output_tokens=1)
            return os.getpid()
        if __name__ == "__main__":
            tokenspy.set_price("m", input=1, output=2)
            tokenspy.init(persist=sys.argv[1])
            tokenspy.record("m", input_tokens=1, output_tokens=1)  # queued in the parent at fork time
            ctx = mp.get_context("fork")
            procs = [ctx.Process(target=work, args=(200,)) for _ in range(3)]  # exit via os._exit
            for p in procs: p.start()
            for p in procs: p.join()
            assert all(p.exitcode == 0 for p in procs)
            with ctx.Pool(2) as pool:  # leaving the block SIGTERMs the workers
                assert len(set(pool.map(work, [50] * 4))) <= 2
            pid = os.fork()  # a bare fork, as pre-fork servers do
            if pid == 0:
                work(25)
                sys.exit(0)
            os.waitpid(pid, 0)
    """, str(db))
    assert proc.returncode == 0, proc.stderr
    records = load_records(db)
    assert len(records) == 1 + 3 * 200 + 4 * 50 + 25
    assert len({r.id for r in records}) == len(records)


def test_the_pid_and_host_of_each_writer_are_stored(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]], rows: Callable[[Path], int]) -> None:
    proc = run(RECORDER, str(db), "0", "3")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db) as conn:
        pids = {row[0] for row in conn.execute("SELECT pid FROM calls")}
        hosts = {row[0] for row in conn.execute("SELECT host FROM calls")}
    assert len(pids) == 1 and pids != {os.getpid()} and hosts == {socket.gethostname()}
    assert rows(db) == 3


def test_sigterm_during_a_write_lets_the_write_commit_first(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]], rows: Callable[[Path], int]) -> None:
    proc = run("""
        import os, signal, sys, tokenspy
        from tokenspy_core import store
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        st = store.stores()[0]
        write = st._write
        def interrupted_write(batch):
            os.kill(os.getpid(), signal.SIGTERM)  # handled inside this write, by this same thread
            write(batch)
        st._write = interrupted_write
        for i in range(100):
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        st.flush()
        print("not reached")
    """, str(db))
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout, proc.stderr
    assert rows(db) == 100



def test_sigterm_while_a_store_closes_still_writes_what_it_holds(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]], rows: Callable[[Path], int]) -> None:
    # A pool worker leaving normally (its exit finalizer closes the store) is SIGTERMed by the pool's
    # terminate() meanwhile: the signal's flush must still find the store being closed.
    proc = run("""
        import os, signal, sys, tokenspy
        from tokenspy_core import store
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        st = store.stores()[0]
        st.flush_interval = 3600  # the writer thread never writes: the close does
        for i in range(100):
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        writer = st._thread
        class SignalledJoin:
            def join(self, timeout=None):
                writer.join(timeout)
                os.kill(os.getpid(), signal.SIGTERM)  # handled right here, before the close writes
        st._thread = SignalledJoin()
        st.close()
        print("not reached")
    """, str(db))
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout, proc.stderr
    assert rows(db) == 100

# init() at module level, as scripts do: spawn and forkserver children (forkserver: Linux's default from
# Python 3.14) run it again while importing __main__, before the child's bootstrap clears the exit
# finalizers registered so far; they then leave through os._exit (forkserver, fork) or sys.exit (spawn).
START_METHOD_SCRIPT = """
    import multiprocessing as mp, sys, tokenspy
    tokenspy.set_price("m", input=1, output=2)
    tokenspy.init(persist=sys.argv[1])
    OPEN = []

    def work(n):
        for _ in range(n):
            with tokenspy.session("job"):
                tokenspy.record("m", input_tokens=10, output_tokens=1)
        call = tokenspy.start_call("m", stream=True)  # a stream still being read at exit
        call.set_usage(input_tokens=10, output_tokens=1)  # reported: nothing to estimate (tiktoken is slow to load)
        OPEN.append(call)

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[2])
        pool = ctx.Pool(2)
        pool.map(work, [25] * 4, chunksize=1)
        pool.close()  # the workers leave when their tasks are done, not by SIGTERM
        pool.join()
        p = ctx.Process(target=work, args=(50,))
        p.start()
        p.join()
        assert p.exitcode == 0
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork and forkserver start methods")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_keep_every_record_with_each_start_method(
        method: str, db: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = run(START_METHOD_SCRIPT, str(db), method)
    assert proc.returncode == 0, proc.stderr
    records = load_records(db)
    finished = [r for r in records if r.status == "finished"]
    aborted = [r for r in records if r.status == "aborted"]
    assert len(finished) == 4 * 25 + 50 and len(aborted) == 4 + 1
    assert all(r.partial for r in aborted)
    assert sum(r.cost_femto or 0 for r in records) == 155 * (10 * 10**9 + 2 * 10**9)
    assert len({r.id for r in records}) == len(records)


def test_sigterm_still_kills_when_the_interrupted_code_holds_what_ending_open_calls_needs(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]], rows: Callable[[Path], int]) -> None:
    # The main thread holds a lock that ending a call takes (as the tokenizer's first load does): ending the
    # open calls waits for it a bounded time, then the finished calls are written and the process dies.
    proc = run("""
        import os, signal, sys, threading, time, tokenspy
        from tokenspy_core import at_exit, store
        store._SIGNAL_END_TIMEOUT_S = 0.5
        busy = threading.Lock()
        at_exit.before_exit_flush(busy.acquire)  # an adapter's exit hook, waiting for the interrupted code
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])
        for i in range(20):
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        with busy:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(20)
        print("not reached")
    """, str(db), timeout=15)
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout, proc.stderr
    assert rows(db) == 20


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_call_open_in_the_parent_at_fork_is_recorded_once_by_the_parent(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # Each forked child held a copy of the parent's open call, and its exit ended it: one extra aborted
    # record per child, of a call the parent goes on to finish.
    proc = run("""
        import multiprocessing as mp, os, sys, tokenspy
        tokenspy.set_price("m", input=1, output=2)
        tokenspy.init(persist=sys.argv[1])

        def work(n):
            tokenspy.record("m", input_tokens=10, output_tokens=1)
            mine = tokenspy.start_call("m", stream=True)  # the child's own, still open at its exit
            mine.set_usage(input_tokens=10, output_tokens=1)
            work.open = mine

        if __name__ == "__main__":
            outer = tokenspy.start_call("m", stream=True)  # in flight while the workers are forked
            outer.set_usage(input_tokens=100)  # its prompt already reported (as Anthropic's message_start)
            ctx = mp.get_context("fork")
            with ctx.Pool(2) as pool:
                pool.map(work, [1] * 4, chunksize=1)
                pool.close()
                pool.join()
            pid = os.fork()
            if pid == 0:
                work(1)
                sys.exit(0)
            os.waitpid(pid, 0)
            outer.finish(usage={"output_tokens": 10})
    """, str(db))
    assert proc.returncode == 0, proc.stderr
    records = load_records(db)
    parents = [r for r in records if r.input_tokens == 100]
    assert [(r.status, r.output_tokens) for r in parents] == [("finished", 10)]
    # The children's own calls: every finished one, and the one each left open at exit (a worker's last).
    assert sorted(r.status for r in records if r.input_tokens == 10) == ["aborted"] * 5 + ["finished"] * 5


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_stream_open_at_fork_closed_in_the_child_is_recorded_once_by_the_parent(
        db: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # The child's copy of the stream, closed there, ended its copy of the parent's call: a second record
    # of the same provider call, aborted.
    proc = run("""
        import os, sys, openai, tokenspy
        from tokenspy.testing import FakeProvider
        tokenspy.init(persist=sys.argv[1])
        with FakeProvider() as fp:
            client = tokenspy.observe(openai.OpenAI(base_url=fp.openai_base_url, api_key="k", max_retries=0))
            stream = client.chat.completions.create(model="gpt-4o", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}])
            chunks = iter(stream)
            next(chunks)
            pid = os.fork()
            if pid == 0:
                from tokenspy_core import store
                stream.close()  # the child's copy
                for writer in store.stores():
                    writer.flush()
                os._exit(0)  # (the fake provider's server thread is the parent's: nothing to stop here)
            os.waitpid(pid, 0)
            for _ in chunks:
                pass
    """, str(db))
    assert proc.returncode == 0, proc.stderr
    assert [(r.status, r.partial) for r in load_records(db)] == [("finished", False)]
