"""Core throughput and memory: finalized call records per second, and a flat record buffer.

    python bench/bench_core.py [--quick] [--repeats N]

- `Call(...)` + `set_usage(...)` + `finish()`: the full lifecycle an adapter drives.
- `tokenspy.record(...)`: the public one-liner (argument checks included).
- both from 1 thread and from 8 threads (records/s over all threads, by the wall clock; the GIL
  serializes them, so the 8-thread figure shows what contention costs).
- tracemalloc peak after 10k and after 1M `tokenspy.record()` calls with the default buffer.
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence

from _common import Case, Options, Row, Thunk, alternate, main

import tokenspy
from tokenspy_core import Call, Tracker, default_tracker

MODEL = "gpt-4o"
TARGET_RPS = 200_000
TARGET_US_RECORD = 5.0


def _lifecycle(tracker: Tracker, n: int) -> None:
    for _ in range(n):
        call = Call(tracker, MODEL, provider="openai")
        call.set_usage(input_tokens=120, output_tokens=40)
        call.finish()


def _lifecycle_openai_usage(tracker: Tracker, n: int) -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    for _ in range(n):
        call = Call(tracker, MODEL, provider="openai")
        call.set_usage(usage)
        call.finish()


def _record(_tracker: Tracker, n: int) -> None:
    record = tokenspy.record
    for _ in range(n):
        record(MODEL, input_tokens=120, output_tokens=40)


def _single(work: Callable[[Tracker, int], None], n: int) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        default_tracker().reset()
        tracker = Tracker()

        def thunk() -> None:
            work(tracker, n)

        return thunk

    return prepare


def _threaded(work: Callable[[Tracker, int], None], n: int, threads: int = 8) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        default_tracker().reset()
        tracker = Tracker()

        def thunk() -> float:
            # Throughput over threads is a wall-clock notion (CPU time would add up both cores).
            workers = [threading.Thread(target=work, args=(tracker, n // threads)) for _ in range(threads)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return time.perf_counter() - start

        return thunk

    return prepare


def _memory(total: int, checkpoint: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(current, peak) traced bytes after `checkpoint` and after `total` tokenspy.record() calls."""
    tracker = default_tracker()
    tracker.reset()
    tokenspy.record(MODEL, input_tokens=1, output_tokens=1)  # prices and imports resolved outside
    tracker.reset()
    tracemalloc.start()
    try:
        _record(tracker, checkpoint)
        early = tracemalloc.get_traced_memory()
        _record(tracker, total - checkpoint)
        late = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        tracker.reset()
    return early, late


def run(opts: Options) -> list[Row]:
    n = opts.size(50_000, 5_000)
    # Settle imports and price lookups before any timing.
    _lifecycle(Tracker(), 10)
    _record(default_tracker(), 10)
    works = {"Call + set_usage + finish": _lifecycle,
             "Call + set_usage(openai dict) + finish": _lifecycle_openai_usage,
             "tokenspy.record()": _record}
    cases = [Case(f"{name}, 1 thread", _single(work, n)) for name, work in works.items()]
    cases += [Case(f"{name}, 8 threads", _threaded(work, n)) for name, work in works.items()]
    measured = alternate(cases, repeats=opts.repeats, warmup=opts.warmup, progress="core")
    rows: list[Row] = []
    for case in cases:
        seconds = measured[case.name].median
        per_second = n / seconds
        single = case.name.endswith("1 thread")
        rows.append(Row(
            bench=f"core: records/s, {n:,} calls", variant=case.name, value=per_second, unit="records/s",
            target=f"≥ {TARGET_RPS:,}" if single else "",
            met=per_second >= TARGET_RPS if single else None,
            note=f"{seconds / n * 1e6:.2f} µs/record" + ("" if single else " (wall clock)"),
        ))
    total = opts.size(1_000_000, 100_000)
    checkpoint = 10_000
    (cur_early, peak_early), (cur_late, peak_late) = _memory(total, checkpoint)
    growth = peak_late / peak_early
    bench = "core: tracemalloc, default buffer"
    rows.append(Row(bench=bench, variant=f"peak after {checkpoint:,} records", value=peak_early / 2**20,
                    unit="MiB", note=f"current {cur_early / 2**20:.2f} MiB"))
    rows.append(Row(bench=bench, variant=f"peak after {total:,} records", value=peak_late / 2**20, unit="MiB",
                    ratio=growth, baseline=f"after {checkpoint:,}", target="≤ 2.0x", met=growth <= 2.0,
                    note=f"current {cur_late / 2**20:.2f} MiB (single run, deterministic)"))
    return rows


def cli(argv: Sequence[str] | None = None) -> None:
    main("bench_core: finalized call records per second, memory", run, argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
