"""Shared benchmark machinery: alternated timing, medians, paired ratios, targets, the table.

Every benchmark is a list of `Case`s. A case's `prepare()` does the untimed setup (build a model,
a client, a handler) and returns the timed thunk. `alternate()` runs the cases interleaved
(A B C, B C A, C A B, …: each round starts one case later, so no case always runs first or last
after a warm CPU cache), takes `repeats` samples of each after `warmup` untimed rounds, and keeps
the samples in round order so that ratios can be *paired*: a ratio is the median over rounds of
`variant / baseline` measured in the same round, which cancels most of the drift of a machine
shared with other busy processes.

A thunk normally returns None and is timed as a whole; it may instead return its own measurement
in seconds (e.g. time to first chunk only), taken with `now()`.

The clock is the process CPU time by default (`--clock cpu`, `time.process_time`): the benchmarks do
no real I/O (in-process transports), and on a machine shared with other busy processes the wall clock
mostly measures how long the scheduler kept us waiting. `--clock wall` uses `time.perf_counter`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Case",
    "Measured",
    "Options",
    "Row",
    "against_peers",
    "alternate",
    "fmt_number",
    "load_rows",
    "machine_info",
    "main",
    "markdown_table",
    "now",
    "paired_difference",
    "paired_ratio",
    "parse_options",
    "peer_note",
    "print_machine_info",
    "quiet_logs",
    "skipped",
]

# Measure the checkout these scripts live in, whatever `pip install -e` points at: the repository's
# packages go first on sys.path (every benchmark imports this module before tokenspy).
ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "integrations", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

Thunk = Callable[[], float | None]
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: Callable[[], float] = time.process_time


def now() -> float:
    """The benchmark clock (see the module doc), for thunks that measure part of their own work."""
    return _clock()


def set_clock(name: str) -> None:
    global _clock
    _clock = CLOCKS[name]

PACKAGES = ("tokenspy", "langchain-core", "llama-index-core", "openai", "anthropic", "httpx", "httpx2",
            "tiktoken", "genai-prices", "langfuse", "langsmith", "langchain-community")


@dataclass(frozen=True)
class Options:
    quick: bool = False
    repeats: int = 5
    warmup: int = 1
    json_path: str | None = None
    clock: str = "cpu"

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def parse_options(argv: Sequence[str] | None = None, description: str = "") -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for a smoke run (numbers are noisy)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per case (default 5, ≥ 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="also write the rows to this JSON file")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: process CPU time (default; robust on a busy machine), wall: perf_counter")
    ns = parser.parse_args(argv)
    repeats = ns.repeats if ns.repeats is not None else (3 if ns.quick else 5)
    set_clock(ns.clock)
    return Options(quick=ns.quick, repeats=repeats, warmup=ns.warmup, json_path=ns.json_path, clock=ns.clock)


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[], Thunk]


@dataclass
class Measured:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds, one per round, in round order

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _timed(thunk: Thunk) -> float:
    gc.collect()
    start = _clock()
    own = thunk()
    elapsed = _clock() - start
    return elapsed if own is None else own


def alternate(cases: Sequence[Case], *, repeats: int = 5, warmup: int = 1,
              progress: str | None = None) -> dict[str, Measured]:
    """Run the cases interleaved, `warmup` untimed rounds then `repeats` timed ones."""
    results = {case.name: Measured(case.name) for case in cases}
    n = len(cases)
    for round_no in range(warmup + repeats):
        for i in range(n):
            case = cases[(round_no + i) % n]
            elapsed = _timed(case.prepare())
            if round_no >= warmup:
                results[case.name].samples.append(elapsed)
        if progress is not None:
            print(f"  [{progress}] round {round_no + 1}/{warmup + repeats}", file=sys.stderr, flush=True)
    return results


def paired_ratio(variant: Measured, baseline: Measured) -> float:
    """Median over rounds of variant/baseline measured in the same round."""
    return statistics.median(v / b for v, b in zip(variant.samples, baseline.samples, strict=True))


def paired_difference(variant: Measured, baseline: Measured) -> float:
    """Median over rounds of variant - baseline measured in the same round (seconds): what a variant
    adds, with the machine's drift between rounds cancelled as in `paired_ratio`."""
    return statistics.median(v - b for v, b in zip(variant.samples, baseline.samples, strict=True))


# Two variants doing the same work (a no-op handler and a peer with no per-token callback) differ by
# up to ~2% in paired ratio on a busy 2-core machine: within that band a comparison is a tie.
NOISE = 0.02


def against_peers(variant: Measured, peers: Sequence[Measured], noise: float = NOISE) -> tuple[list[str], list[str]]:
    """(ties, losses): the peers `variant` is not faster than, within `noise`, and beyond it."""
    ties: list[str] = []
    losses: list[str] = []
    for peer in peers:
        ratio = paired_ratio(variant, peer)
        if ratio > 1.0 + noise:
            losses.append(peer.name)
        elif ratio >= 1.0:
            ties.append(peer.name)
    return ties, losses


def peer_note(ties: Sequence[str], losses: Sequence[str]) -> str:
    """"; tie (within noise) with (d); slower than (e)" from `against_peers`' answer."""
    note = ""
    if ties:
        note += "; tie (within noise) with " + ", ".join(p.split(" ", 1)[0] for p in ties)
    if losses:
        note += "; slower than " + ", ".join(p.split(" ", 1)[0] for p in losses)
    return note


# -- results ---------------------------------------------------------------------------------------

@dataclass
class Row:
    bench: str
    variant: str
    value: float | None  # in `unit`
    unit: str
    ratio: float | None = None  # vs `baseline` (paired median)
    baseline: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


def skipped(bench: str, reason: str = "adapter not available") -> Row:
    return Row(bench=bench, variant=f"skipped: {reason}", value=None, unit="")


def fmt_number(value: float | None) -> str:
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _met(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "**no**")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| benchmark | variant | median | unit | ratio | vs | target | met | note |",
             "|---|---|---:|---|---:|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3f}"
        lines.append(f"| {r.bench} | {r.variant} | {fmt_number(r.value)} | {r.unit} | {ratio} | {r.baseline} "
                     f"| {r.target} | {_met(r.met)} | {r.note} |")
    return "\n".join(lines)


def loop_speed() -> float:
    """CPU ns per iteration of an empty `for` loop: how fast this interpreter runs right now (a quiet
    modern x86 core runs CPython 3.11 at roughly 10-15 ns), to put absolute numbers in context."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(1_000_000):
            pass
        best = min(best, time.process_time() - start)
    return best * 1e3


def machine_info() -> dict[str, str]:
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "measured checkout": f"{ROOT} @ {commit}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load) if load else "n/a",
        "empty loop": f"{loop_speed():.1f} ns/iteration (CPU)",
        "packages": ", ".join(versions),
    }


def print_machine_info(clock: str = "cpu") -> None:
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print(f"clock: {clock} ({CLOCKS[clock].__name__})")
    print()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence library warnings (unpriced models, closed export ports) while timing."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(previous)


def main(title: str, run: Callable[[Options], list[Row]], argv: Sequence[str] | None = None) -> list[Row]:
    """The entry point of one benchmark script: machine info, the rows, its table, optional JSON."""
    opts = parse_options(argv, description=title)
    print(f"## {title}\n")
    print_machine_info(opts.clock)
    with quiet_logs():
        rows = run(opts)
    print(markdown_table(rows))
    print()
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")
    return rows


def load_rows(path: str | Path) -> list[Row]:
    data: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Row(**item) for item in data]
