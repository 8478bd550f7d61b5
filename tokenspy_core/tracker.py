"""The tracker: incremental, bounded aggregation of finished calls.

Each record updates one small aggregate (its model under its span path); totals, per-model and
per-function numbers and the tree's totals are derived at read time. The tree is keyed
by span *path*, so its size is bounded by the distinct paths of the program, not by the number of
runs; records themselves live in a bounded buffer. `add` takes no lock: it queues the record, and the
queue is folded into the aggregates under the lock every few hundred records and before every read.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from . import spans
from ._guard import _passthrough, log_internal_error
from .call import CallRecord
from .pricing import FEMTO_PER_USD, PriceBook, usd
from .spans import Home, Sink, Span

__all__ = ["DEFAULT_MAX_RECORDS", "PRICES", "Aggregate", "Tracker", "default_tracker", "set_records_limit"]

DEFAULT_MAX_RECORDS = 10_000
# Records queued by `add` before the adding thread folds them into the aggregates (bounds the queue).
_FOLD_EVERY = 256
PRICES = PriceBook()
UNATTRIBUTED = "(unattributed)"


class Aggregate:
    __slots__ = ("cache_write_tokens", "cached_input_tokens", "calls", "cost", "estimated_calls", "failed_calls",
                 "input_tokens", "output_tokens", "partial_calls", "reasoning_tokens", "unpriced_calls")

    def __init__(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.cost = 0
        self.unpriced_calls = 0
        self.partial_calls = 0
        self.estimated_calls = 0
        self.failed_calls = 0

    def add(self, r: CallRecord) -> None:
        self.calls += 1
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.cached_input_tokens += r.cached_input_tokens
        self.cache_write_tokens += r.cache_write_tokens
        self.reasoning_tokens += r.reasoning_tokens
        if r.cost_femto is None:
            self.unpriced_calls += 1
        else:
            self.cost += r.cost_femto
        if r.partial:
            self.partial_calls += 1
        if r.usage_source != "provider":
            self.estimated_calls += 1
        if r.status == "failed":
            self.failed_calls += 1

    def merge(self, other: Aggregate) -> None:
        for name in Aggregate.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float | None:
        """None only when every call was unpriced: an unknown price is never shown as $0."""
        if self.calls and self.unpriced_calls == self.calls:
            return None
        return self.cost / FEMTO_PER_USD

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": self.cost_usd,
            "tokens": self.total_tokens,
            "total_tokens": self.total_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "calls": self.calls,
            "unpriced_calls": self.unpriced_calls,
            "partial_calls": self.partial_calls,
            "estimated_calls": self.estimated_calls,
            "failed_calls": self.failed_calls,
        }


class _Node:
    __slots__ = ("children", "kind", "models", "name")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.children: dict[str, _Node] = {}
        self.models: dict[str | None, Aggregate] = {}

    def self_total(self) -> Aggregate:
        total = Aggregate()
        for agg in self.models.values():
            total.merge(agg)
        return total

    def to_dict(self) -> tuple[dict[str, Any], Aggregate]:
        own = self.self_total()
        total = Aggregate()
        total.merge(own)
        children = []
        for child in self.children.values():
            child_dict, child_total = child.to_dict()
            total.merge(child_total)
            children.append(child_dict)
        children.sort(key=lambda c: (-(c["cost_femto"]), -c["tokens"], c["name"]))
        data = {"name": self.name, "kind": self.kind, **total.to_dict(), "cost_femto": total.cost,
                "self_cost_usd": own.cost_usd, "self_cost_femto": own.cost, "self_tokens": own.total_tokens,
                "self_calls": own.calls,
                "models": {str(m): agg.to_dict() for m, agg in sorted(
                    self.models.items(), key=lambda kv: (-kv[1].cost, str(kv[0])))},
                "children": children}
        return data, total


_limit = DEFAULT_MAX_RECORDS
_limit_lock = threading.Lock()
_following: weakref.WeakSet[Tracker] = weakref.WeakSet()  # the trackers made without their own bound


class Tracker(Sink):
    """Thread-safe aggregation of call records; also a sink a session or handler can own."""

    def __init__(self, *, max_records: int | None = None, prices: PriceBook | None = None,
                 clock: Callable[[], float] = time.perf_counter, name: str | None = None) -> None:
        """`max_records`: how many records `calls()` keeps; None follows the process-wide bound
        (`set_records_limit`, which `tokenspy.init(max_records=...)` sets)."""
        if max_records is None:
            with _limit_lock:
                max_records = _limit
                _following.add(self)
        elif not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 0:
            raise ValueError(f"max_records must be a non-negative int, got {max_records!r}")
        self.name = name
        self.prices = prices if prices is not None else PRICES
        self.clock = clock
        self._lock = threading.RLock()
        self._max_records = max_records
        self._records: deque[CallRecord]
        self._listeners: list[Callable[[CallRecord], None]] = []
        self._reset_state()

    def set_max_records(self, max_records: int) -> None:
        """Keep at most `max_records` records from now on (the most recent; totals are unaffected)."""
        with self._lock:
            self._max_records = max_records
            self._records = deque(self._records, maxlen=max_records)

    def _reset_state(self) -> None:
        self._root = _Node("(root)", "root")
        self._records = deque(maxlen=self._max_records)
        self._pending: deque[CallRecord] = deque()

    # -- writing --------------------------------------------------------------------------------
    def add(self, record: CallRecord) -> None:
        # No lock per record: `deque.append` is atomic under the GIL, while a lock taken per record
        # convoys threads (8 threads on 2 cores ran ~4x slower per record). Queued records are folded
        # into the aggregates and the buffer in batches, under the lock, and before every read.
        pending = self._pending
        pending.append(record)
        # One thread folds; the others go on (whatever they queue meanwhile is folded in that pass).
        if len(pending) >= _FOLD_EVERY and self._lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                self._lock.release()
        for listener in self._listeners:
            # `guarded("record listener")` inlined (per record, per listener).
            try:
                listener(record)
            except Exception as exc:
                if isinstance(exc, _passthrough()):
                    raise
                log_internal_error("record listener", exc)

    def _fold(self) -> None:
        """Aggregate the queued records (the caller holds the lock; only lock holders pop)."""
        pending = self._pending
        root, records = self._root, self._records
        while pending:
            record = pending.popleft()
            node = root
            path = record.span_path
            # (no zip at all for the common unattributed record; zip's keyword costs as much as the loop)
            for name, kind in zip(path, record.span_kinds) if path else ():  # noqa: B905 - same lengths
                child = node.children.get(name)
                if child is None:
                    child = node.children[name] = _Node(name, kind)
                node = child
            model = record.model
            agg = node.models.get(model)
            if agg is None:
                agg = node.models[model] = Aggregate()
            agg.add(record)
            records.append(record)

    def subscribe(self, listener: Callable[[CallRecord], None]) -> Callable[[], None]:
        """Call `listener(record)` for every record added (persistence, exporters). Returns unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def reset(self) -> None:
        with self._lock:
            self._reset_state()

    # -- reading --------------------------------------------------------------------------------
    def calls(self) -> list[CallRecord]:
        with self._lock:
            self._fold()
            return list(self._records)

    def totals(self) -> Aggregate:
        with self._lock:
            self._fold()
            total = Aggregate()
            for agg in self._model_totals().values():
                total.merge(agg)
            return total

    @property
    def total_cost(self) -> Decimal:
        """Exact total cost in USD of the priced calls."""
        return usd(self.totals().cost)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._fold()
            tree, total = self._root.to_dict()
            by_model = {str(m): agg.to_dict() for m, agg in sorted(
                self._model_totals().items(), key=lambda kv: (-kv[1].cost, str(kv[0])))}
            by_function: dict[str, Aggregate] = {}
            self._collect_functions(self._root, by_function)
            records = [r.to_dict() for r in self._records]
        tree["name"] = "(root)"
        return {
            "total_cost_usd": total.cost_usd,  # None when every call was unpriced, as per model
            "total_cost_usd_exact": None if total.cost_usd is None else format(usd(total.cost), "f"),
            "total_tokens": total.total_tokens,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cached_input_tokens": total.cached_input_tokens,
            "cache_write_tokens": total.cache_write_tokens,
            "reasoning_tokens": total.reasoning_tokens,
            "total_calls": total.calls,
            "unpriced_calls": total.unpriced_calls,
            "partial_calls": total.partial_calls,
            "estimated_calls": total.estimated_calls,
            "failed_calls": total.failed_calls,
            "by_model": by_model,
            "by_function": {name: agg.to_dict() for name, agg in sorted(
                by_function.items(), key=lambda kv: (-kv[1].cost, kv[0]))},
            "calls": records,
            "tree": tree,
        }

    def _model_totals(self) -> dict[str | None, Aggregate]:
        """Per model over the whole tree (summed at read time: one aggregate per record, not two)."""
        out: dict[str | None, Aggregate] = {}
        stack = [self._root]
        while stack:
            node = stack.pop()
            for model, agg in node.models.items():
                total = out.get(model)
                if total is None:
                    total = out[model] = Aggregate()
                total.merge(agg)
            stack.extend(node.children.values())
        return out

    def _collect_functions(self, node: _Node, out: dict[str, Aggregate]) -> None:
        if node.models:
            name = UNATTRIBUTED if node is self._root else node.name
            agg = out.setdefault(name, Aggregate())
            agg.merge(node.self_total())
        for child in node.children.values():
            self._collect_functions(child, out)

    def render(self, format: str = "text", *, ascii: bool = False, hints: bool = True) -> str:
        from .report import render

        return render(self.stats(), format=format, ascii=ascii, hints=hints)


_default: Tracker | None = None
_default_lock = threading.Lock()


def set_records_limit(max_records: int) -> None:
    """The process-wide bound on the records kept in memory, for the default tracker and every view
    made without a bound of its own (framework handlers', sessions'): a long-running process keeps
    no more than that per view, whichever view the records went to."""
    global _limit
    if not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 0:
        raise ValueError(f"max_records must be a non-negative int, got {max_records!r}")
    with _limit_lock:
        _limit = max_records
        trackers = list(_following)
    for tracker in trackers:
        tracker.set_max_records(max_records)


def home_of(span: Span | None, sinks: Iterable[Sink]) -> tuple[Tracker, Iterable[Sink]]:
    """The tracker, and the sinks besides `sinks`, of a call started under `span` that names no tracker:
    the span's `Home` (its handler's), else the default tracker."""
    home = span.home if span is not None and spans.homes else None
    if home is None:
        return default_tracker(), sinks
    tracker = home.tracker if home.tracker is not None else default_tracker()
    return tracker, (*sinks, *home.sinks) if home.sinks else sinks


def joined_home(home: Home | None, other: Home | None) -> Home | None:
    """`home` that also feeds what `other` records into: a level two handlers on different trackers own,
    made current by the first one (its code's calls are both handlers', as its model calls are)."""
    if other is None or home is None or other is home:
        return home if other is None else other
    tracker = home.tracker if home.tracker is not None else default_tracker()
    sinks = list(home.sinks)
    for sink in (other.tracker if other.tracker is not None else default_tracker(), *other.sinks):
        if sink is not tracker and sink not in sinks:
            sinks.append(sink)
    return Home(home.tracker, tuple(sinks))


def default_tracker() -> Tracker:
    """The process-wide tracker that `tokenspy.stats()` and `report()` read."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Tracker(name="default")
    return _default
