"""Facade edge cases: capped buffers vs totals, awaitables from sync callables, all-or-nothing init,
the number types prices and budgets take, where reports go, start_call's argument checks."""

from __future__ import annotations

import asyncio
import functools
import io
import pathlib
import warnings
from collections.abc import Awaitable, Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

import tokenspy
from tokenspy._profile import Session
from tokenspy_core import config
from tokenspy_core.store import close_all, stores


def _dollar_a_token() -> None:
    tokenspy.set_price("toy-model", input=1_000_000, output=0)  # $1 per input token


def _call() -> None:
    tokenspy.record("toy-model", input_tokens=1, output_tokens=0)


# -- 1. a session's call count ---------------------------------------------------------------------
def test_session_calls_past_its_record_buffer_counts_every_call() -> None:
    _dollar_a_token()
    with Session("big", max_records=3) as s:
        for _ in range(5):
            _call()
    assert int(s.calls) == s.calls == 5 == s.stats()["total_calls"]
    assert len(list(s.calls)) == len(s.records()) == 3  # the records are the buffer's, the number is not
    assert "5 calls" in repr(s)


def test_init_max_records_bounds_every_view_made_without_its_own_bound() -> None:
    # A long-running server: a handler's and a session's own views keep no more than init() says.
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from tokenspy.langchain import TokenSpyHandler
    from tokenspy_core import Call, Tracker

    _dollar_a_token()
    handler = TokenSpyHandler()  # made before init: follows the bound too
    own = Tracker(max_records=100)  # a bound of its own: kept
    tokenspy.init(max_records=20)
    model = FakeListChatModel(responses=["hello there"])
    with Session("batch") as s:
        for _ in range(30):
            model.invoke("hi", config={"callbacks": [handler]})
            _call()
            Call(own, "toy-model").finish({"prompt_tokens": 1, "completion_tokens": 0})
    assert (len(handler.calls()), handler.stats()["total_calls"]) == (20, 30)
    assert (len(s.records()), int(s.calls)) == (20, 90)  # its span saw the three kinds of call
    assert len(tokenspy.calls()) == 20 and tokenspy.stats()["total_calls"] == 60
    assert len(own.calls()) == 30


def test_init_without_max_records_sets_the_default_bound_again() -> None:
    # "each call sets every option it takes (the defaults for those not given)"
    tokenspy.init(max_records=5)
    tokenspy.init(capture_content=False)
    _dollar_a_token()
    for _ in range(8):
        _call()
    assert len(tokenspy.calls()) == 8


# -- 2. profile on a sync callable that returns a coroutine ----------------------------------------
def _plain_decorator(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def passthrough(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return passthrough


def test_profile_on_async_function_under_plain_decorator_attributes_and_enforces_budget() -> None:
    _dollar_a_token()

    @tokenspy.profile(budget_usd=1, on_exceeded="raise")
    @_plain_decorator
    async def answer() -> None:
        await asyncio.sleep(0)
        for _ in range(3):
            _call()

    with warnings.catch_warnings(), pytest.raises(tokenspy.BudgetExceededError):
        warnings.simplefilter("ignore")
        asyncio.run(answer())
    assert [r.span_path for r in tokenspy.calls()] == [("answer",), ("answer",)]


def test_profile_on_object_with_async_call_attributes_its_calls() -> None:
    _dollar_a_token()

    class Agent:
        async def __call__(self, n: int) -> int:
            await asyncio.sleep(0)
            _call()
            return n

    agent: Callable[[int], Awaitable[int]] = tokenspy.profile(name="agent")(Agent())
    assert asyncio.run(agent(7)) == 7
    assert [r.span_path for r in tokenspy.calls()] == [("agent",)]


def test_profile_on_sync_function_returning_a_task_returns_the_task_itself() -> None:
    async def main() -> bool:
        async def work() -> None:
            _call()

        @tokenspy.profile
        def schedule() -> asyncio.Task[None]:
            return asyncio.ensure_future(work())

        task = schedule()
        await task
        return isinstance(task, asyncio.Task)

    _dollar_a_token()
    assert asyncio.run(main())  # not swapped for a coroutine: the caller may cancel() it


# -- 3. init is all or nothing ---------------------------------------------------------------------
def test_failed_init_applies_no_option(tmp_path: pathlib.Path) -> None:
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("not a database\n" * 100)
    before = stores()
    with pytest.raises(Exception):  # noqa: B017 - which error a foreign file gives is the store's business
        tokenspy.init(capture_content=True, tags={"env": "prod"}, max_records=5, persist=not_ours)
    assert config.capture_content is False and config.tags == {}
    assert stores() == before
    record = tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    assert record is not None and record.tags == {}


# -- 4. the numbers prices and budgets take --------------------------------------------------------
def test_fraction_budget_is_exact() -> None:
    tokenspy.set_price("toy-model", input=Fraction(1, 3) * 1_000_000, output=0)  # $1/3 per input token

    @tokenspy.profile(budget_usd=Fraction(2, 3), on_exceeded="raise")
    def run() -> None:
        for _ in range(3):  # 1/3, 2/3 (not over), 1 (over): the third call crosses, nothing raises
            _call()
        _call()  # refused

    with warnings.catch_warnings(), pytest.raises(tokenspy.BudgetExceededError):
        warnings.simplefilter("ignore")
        run()
    assert len(tokenspy.calls()) == 3


def test_signalling_nan_budget_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="budget_usd"):
        tokenspy.profile(budget_usd=Decimal("sNaN"))


@pytest.mark.parametrize("price", [Fraction(5, 2), Decimal("2.5"), 2.5])
def test_set_price_takes_the_number_types_budgets_take(price: Any) -> None:
    tokenspy.set_price("toy-model", input=price, output=0)
    record = tokenspy.record("toy-model", input_tokens=1_000_000, output_tokens=0)
    assert record is not None and record.cost_usd == 2.5


# -- 5. where a report goes ------------------------------------------------------------------------
def test_html_report_to_file_writes_there_and_nowhere_else(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    out = io.StringIO()
    assert tokenspy.report("html", file=out) is None
    assert out.getvalue().lstrip().lower().startswith("<!doctype html")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["text", "json", "html"])
def test_report_with_path_and_file_is_a_value_error(fmt: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        tokenspy.report(fmt, path=tmp_path / "r", file=io.StringIO())
    assert list(tmp_path.iterdir()) == []


# -- 6. start_call -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["no", 0, None])
def test_start_call_stream_must_be_a_bool(bad: Any) -> None:
    with pytest.raises(TypeError, match="stream must be True or False"):
        tokenspy.start_call("gpt-4o", stream=bad)
    assert tokenspy.calls() == []


@pytest.mark.parametrize("call", [
    lambda: tokenspy.set_price("  ", input=1, output=1),
    lambda: tokenspy.record(" ", input_tokens=1, output_tokens=1),
    lambda: tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1, provider=""),
    lambda: tokenspy.start_call("\t"),
], ids=["set_price model", "record model", "record provider", "start_call model"])
def test_a_blank_model_or_provider_is_a_type_error_naming_it(call: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match=r"model|provider"):
        call()
    assert tokenspy.calls() == []


def test_init_persist_takes_any_path_like(tmp_path: pathlib.Path) -> None:
    # pytest's `tmpdir` (a py.path.local) and PurePaths are os.PathLike, as report(path=...) accepts.
    class Where:
        def __fspath__(self) -> str:
            return str(tmp_path / "usage.db")

    tokenspy.init(persist=Where())
    try:
        tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
        assert [store.flush() for store in stores()] == [1]
    finally:
        close_all()
    assert (tmp_path / "usage.db").exists()
