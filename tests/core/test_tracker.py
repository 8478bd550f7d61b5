"""Aggregation: exact sums, span trees under threads and asyncio tasks, bounded memory."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from decimal import Decimal

import tokenspy
from tokenspy_core import Call, Span, Tracker, default_tracker, use_span


def _tree_node(tree: dict, *path: str) -> dict:
    node = tree
    for name in path:
        node = next(child for child in node["children"] if child["name"] == name)
    return node


def test_exact_decimal_sums_over_ten_thousand_calls() -> None:
    tokenspy.set_price("toy-model", input="0.1", output="0.3")
    for _ in range(10_000):
        tokenspy.record("toy-model", input_tokens=1, output_tokens=1)
    tracker = default_tracker()
    # 10,000 * (0.1 + 0.3) / 1e6 = 0.004 exactly; float accumulation would drift.
    assert tracker.total_cost == Decimal("0.004")
    assert tokenspy.stats()["total_cost_usd_exact"] == "0.004000000000000"
    assert tokenspy.stats()["total_calls"] == 10_000


def test_span_tree_under_thread_pool_with_explicit_parents() -> None:
    tokenspy.set_price("toy-model", input=1, output=1)
    root = Span("batch", "function")

    def work(i: int) -> None:
        with use_span(Span(f"worker-{i % 4}", "step", parent=root)):
            tokenspy.record("toy-model", input_tokens=i, output_tokens=1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(100)))
    tree = tokenspy.stats()["tree"]
    batch = _tree_node(tree, "batch")
    assert batch["calls"] == 100 and batch["self_calls"] == 0
    for k in range(4):
        node = _tree_node(tree, "batch", f"worker-{k}")
        assert node["calls"] == 25
        assert node["input_tokens"] == sum(i for i in range(100) if i % 4 == k)
    assert sum(c["cost_femto"] for c in batch["children"]) == batch["cost_femto"]


def test_context_copy_carries_the_current_span_into_threads() -> None:
    @tokenspy.profile
    def parent() -> None:
        ctx = copy_context()
        t = threading.Thread(target=ctx.run, args=(tokenspy.record, "gpt-4o"),
                             kwargs={"input_tokens": 5, "output_tokens": 5})
        t.start()
        t.join()

    parent()
    assert tokenspy.calls()[0].span_path == ("parent",)


async def test_two_hundred_concurrent_tasks_each_see_exactly_their_calls() -> None:
    tokenspy.set_price("toy-model", input=1, output=2)

    async def task(i: int) -> tokenspy.Session:
        async with tokenspy.session(f"task-{i}") as s:
            for _ in range(i % 5 + 1):
                await asyncio.sleep(0)
                call = tokenspy.start_call("toy-model", prompt="x")
                await asyncio.sleep(0)
                call.add_text("abc")
                call.set_usage(input_tokens=i, output_tokens=3)
                call.finish()
        return s

    sessions = await asyncio.gather(*(task(i) for i in range(200)))
    for i, s in enumerate(sessions):
        n = i % 5 + 1
        assert int(s.calls) == n
        assert s.tokens == n * (i + 3)
        assert s.cost == float(Decimal(n * (i * 1 + 3 * 2)) / 1_000_000)
        assert {r.span_path for r in s.calls} == {(f"task-{i}",)}
    assert tokenspy.stats()["total_calls"] == sum(i % 5 + 1 for i in range(200))


def test_tree_totals_and_self_costs_sum_exactly() -> None:
    tokenspy.set_price("a", input=1, output=1)
    tokenspy.set_price("b", input=3, output=3)

    @tokenspy.profile
    def leaf() -> None:
        tokenspy.record("b", input_tokens=10, output_tokens=0)

    @tokenspy.profile(name="agent")
    def outer() -> None:
        tokenspy.record("a", input_tokens=5, output_tokens=5)
        leaf()
        leaf()

    outer()
    tokenspy.record("a", input_tokens=1, output_tokens=0)
    stats = tokenspy.stats()
    agent = _tree_node(stats["tree"], "agent")
    assert agent["calls"] == 3 and agent["self_calls"] == 1
    assert agent["models"]["a"]["tokens"] == 10
    assert _tree_node(stats["tree"], "agent", "leaf")["cost_usd"] == 60 / 1e6
    assert stats["tree"]["self_calls"] == 1
    assert stats["by_function"]["leaf"]["calls"] == 2
    assert stats["by_function"]["(unattributed)"]["calls"] == 1
    assert stats["by_model"]["b"]["input_tokens"] == 20
    assert stats["total_cost_usd_exact"] == "0.000071000000000"


def test_record_buffer_is_bounded_while_totals_stay_exact() -> None:
    tracker = Tracker(max_records=100)
    for _ in range(1_000):
        call = Call(tracker, "gpt-4o")
        call.finish({"prompt_tokens": 1, "completion_tokens": 1})
    assert len(tracker.calls()) == 100
    assert tracker.totals().calls == 1_000


def test_snapshot_is_consistent_under_concurrent_writes() -> None:
    tracker = Tracker(max_records=10)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            Call(tracker, "gpt-4o").finish({"prompt_tokens": 2, "completion_tokens": 1})

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(50):
            stats = tracker.stats()
            assert stats["total_tokens"] == 3 * stats["total_calls"]
            assert stats["tree"]["calls"] == stats["total_calls"]
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_subscribers_see_every_record_and_can_unsubscribe() -> None:
    tracker = Tracker()
    seen: list[int] = []
    unsubscribe = tracker.subscribe(lambda r: seen.append(r.id))
    Call(tracker, "gpt-4o").finish({"prompt_tokens": 1, "completion_tokens": 1})
    unsubscribe()
    Call(tracker, "gpt-4o").finish({"prompt_tokens": 1, "completion_tokens": 1})
    assert len(seen) == 1


def test_folded_totals_count_every_outcome_across_several_folds() -> None:
    # Records are queued and folded into the aggregates in batches: totals per model and per span
    # must equal adding each record on its own, across fold boundaries.
    from tokenspy_core.tracker import Aggregate

    tokenspy.set_price("toy-model", input=1, output=2)
    tracker = Tracker()
    outer = Span("outer", "function")
    for i in range(700):  # more than one fold's worth, with runs of different lengths
        span = outer if i % 7 < 3 else None
        model = "toy-model" if i % 5 else "unpriced-model"
        call = Call(tracker, model, parent=span)
        if i % 11 == 0:
            call.fail(RuntimeError("boom"))  # no usage: nothing billed
            continue
        if i % 13 == 0:
            call.set_usage(output_tokens=i)  # input estimated
        else:
            call.set_usage(input_tokens=i, output_tokens=1, cached_input_tokens=i // 2, reasoning_tokens=1)
        call.abort() if i % 3 == 0 else call.finish()
    records = tracker.calls()
    assert len(records) == 700
    expected = Aggregate()
    for record in records:
        expected.add(record)
    assert expected.failed_calls == 64 and expected.unpriced_calls == 140 and expected.estimated_calls > 0
    assert vars_of(tracker.totals()) == vars_of(expected)
    by_model = tracker.stats()["by_model"]
    assert by_model["unpriced-model"]["calls"] == 140
    assert by_model["toy-model"]["cost_usd"] == sum(r.cost_femto for r in records if r.model == "toy-model") / 1e15
    outer_node = _tree_node(tracker.stats()["tree"], "outer")
    assert outer_node["calls"] == sum(1 for r in records if r.span_path == ("outer",))


def vars_of(agg: object) -> dict[str, int]:
    return {name: getattr(agg, name) for name in type(agg).__slots__}  # type: ignore[attr-defined]
