"""One `session` object entered by several tasks at once, or again inside itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

import tokenspy


def _one_call() -> None:
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=0)


def test_a_session_shared_by_concurrent_tasks_counts_only_what_ran_inside_it() -> None:
    shared = tokenspy.session("batch")
    outside_paths: list[tuple[str, ...]] = []

    async def worker(delay: float) -> None:
        async with shared:
            await asyncio.sleep(delay)
            _one_call()
        # After this task left the block, its calls are no longer the session's, whatever the others do.
        await asyncio.sleep(0.02)
        record = tokenspy.record("gpt-4o", input_tokens=100, output_tokens=0)
        outside_paths.append(record.span_path)

    async def main() -> None:
        await asyncio.gather(*(worker(i * 0.005) for i in range(6)))

    asyncio.run(main())
    assert shared.calls == 6
    assert shared.tokens == 6
    assert outside_paths == [()] * 6
    assert tokenspy.stats()["total_calls"] == 12


def test_a_session_entered_again_inside_itself_counts_a_call_once() -> None:
    s = tokenspy.session("again")
    with s:
        with s:
            _one_call()
        _one_call()
    _one_call()  # after both exits: outside
    assert s.calls == 2
    assert s.tokens == 2
    assert tokenspy.stats()["total_calls"] == 3
    assert [r.span_path for r in tokenspy.calls()] == [("again",), ("again",), ()]  # one level, not two


def test_a_session_exited_in_another_context_than_its_enter_still_ends() -> None:
    s = tokenspy.session("fixture")

    async def enter() -> None:
        await s.__aenter__()

    async def leave() -> None:
        await s.__aexit__(None, None, None)

    async def main() -> None:
        await asyncio.create_task(enter())  # a task of its own: its context is not this one
        await asyncio.create_task(leave())

    asyncio.run(main())
    assert s.span is not None and s.span.end_time is not None


def test_a_session_budget_is_the_session_objects_across_its_entries() -> None:
    shared = tokenspy.session("budget", budget_usd=0.0003, on_exceeded="raise")
    refused = 0

    async def worker() -> None:
        nonlocal refused
        async with shared:
            for _ in range(4):
                await asyncio.sleep(0)
                try:
                    tokenspy.record("gpt-4o", input_tokens=0, output_tokens=10)  # $0.0001 each
                except tokenspy.BudgetExceededError:
                    refused += 1

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(3)))

    with pytest.warns(UserWarning, match="'budget' spent"):
        asyncio.run(main())
    # Three calls spend exactly the budget (allowed), the fourth crosses it (spent), every later one is refused.
    assert shared.calls == 4
    assert refused == 8
    assert shared.cost == pytest.approx(0.0004)


def test_a_session_in_an_abandoned_async_generator_is_not_the_consumers_span_afterwards() -> None:
    import gc

    holder: dict[str, tokenspy.Session] = {}

    async def relay() -> AsyncIterator[int]:
        with tokenspy.session("sse") as s:
            holder["s"] = s
            _one_call()
            for i in range(3):
                yield i

    async def main() -> tuple[str, ...]:
        gen = relay()
        async for _ in gen:
            break  # the client went away: the generator is dropped without aclose()
        del gen
        gc.collect()  # the loop's finalizer closes it, in a task of its own
        await asyncio.sleep(0.05)
        assert tokenspy.current_span() is None
        return tokenspy.record("gpt-4o", input_tokens=1, output_tokens=0).span_path

    assert asyncio.run(main()) == ()
    assert holder["s"].calls == 1


def test_a_session_entered_three_times_inside_itself_keeps_every_call() -> None:
    s = tokenspy.session("deep")
    with s:
        with s:
            with s:
                tokenspy.record("gpt-4o", input_tokens=1, output_tokens=0)
            tokenspy.record("gpt-4o", input_tokens=10, output_tokens=0)
        tokenspy.record("gpt-4o", input_tokens=100, output_tokens=0)
    assert (s.calls, s.tokens) == (3, 111)
    assert [r.span_path for r in tokenspy.calls()] == [("deep",)] * 3


def test_a_session_opened_in_a_profiled_generator_gets_the_calls_after_its_yields() -> None:
    holder: dict[str, tokenspy.Session] = {}

    @tokenspy.profile
    def pages() -> Iterator[int]:
        with tokenspy.session("g") as s:
            holder["s"] = s
            for i in range(3):
                tokenspy.record("gpt-4o", input_tokens=10**i, output_tokens=0)
                yield i

    assert list(pages()) == [0, 1, 2]
    assert holder["s"].tokens == 111
    assert [r.span_path for r in tokenspy.calls()] == [("pages", "g")] * 3


def test_tasks_that_enter_the_session_keep_it_after_the_block_that_started_them_exits() -> None:
    # The workers' entries inherit the starting block's span (re-entries): its exit ended the span under
    # them, and their calls were then nobody's, the session's budget no longer enforced.
    s = tokenspy.session("batch", budget_usd=0.000_05, on_exceeded="raise")  # gpt-4o: $0.0000025 a token
    refused: list[int] = []

    async def worker(n: int) -> None:
        async with s:
            await asyncio.sleep(0.01)  # the starting block has exited by now
            for _ in range(3):
                try:
                    tokenspy.record("gpt-4o", input_tokens=4, output_tokens=0)  # $0.00001
                except tokenspy.BudgetExceededError:
                    refused.append(n)
                await asyncio.sleep(0)

    async def main() -> None:
        async with s:
            tasks = [asyncio.create_task(worker(n)) for n in range(4)]
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert s.calls == 6 and len(refused) == 6  # five calls spend exactly $0.00005, the sixth crosses
    assert [r.span_path for r in tokenspy.calls()] == [("batch",)] * 6
    with s:
        pass  # entered again afterwards: a new entry, ended at its exit
    assert s.span is not None and s.span._ended


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        tokenspy.session(name)
    with pytest.raises(ValueError, match="must not be empty"):
        tokenspy.profile(name=name)


def test_sessions_entered_and_left_leave_nothing_in_the_threads_context() -> None:
    # A server thread entering a new session per request kept one context variable per session in its
    # context, for good (~100 bytes a request, never freed).
    import contextvars
    import threading

    sizes: list[int] = []

    def serve() -> None:
        for _ in range(2):
            for n in range(100):
                with tokenspy.session("request", tags={"n": n}), tokenspy.session("inner"):
                    _one_call()
            sizes.append(len(contextvars.copy_context()))

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()
    assert sizes[0] == sizes[1] <= 2  # tokenspy's own current span, not one per session
    assert tokenspy.stats()["total_calls"] == 200


def test_threads_entering_and_leaving_one_session_at_once_each_leave_their_own_entry() -> None:
    # Each exit looked its entry up in the session's open entries without the lock other threads remove
    # theirs under: a skipped element sent it to the fallback, another thread's entry.
    import sys
    import threading

    s = tokenspy.session("shared")
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(600):
            with s:
                _one_call()

    threads = [threading.Thread(target=work) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between almost any two bytecodes: the race shows
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert s.calls == 4800
    assert {r.span_path for r in tokenspy.calls()} == {("shared",)}
    assert s._open == [] and s._first == {}
