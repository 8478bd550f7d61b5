"""`@tokenspy.profile` and `tokenspy.session`: spans users open around their own code."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator, Mapping
from contextvars import ContextVar, Token
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal, TypeVar, overload

from tokenspy_core import Budget, CallRecord, Span, Tracker, current_span, use_span
from tokenspy_core.call import CURRENT
from tokenspy_core.pricing import exact_amount
from tokenspy_core.report import cost_text
from tokenspy_core.spans import user_span_parent

from . import _instrument
from ._api import TrackerView

__all__ = ["CallCount", "Session", "profile", "session"]

F = TypeVar("F", bound=Callable[..., Any])
OnExceeded = Literal["warn", "raise"]


def _check_options(name: Any, budget_usd: Any, on_exceeded: Any, tags: Any) -> Decimal | Fraction | None:
    """Check the options; return the budget as the exact amount each invocation's `Budget` takes."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name is not None and not name.strip():
        # A blank row in every report, and a blank key in `by_function`: never what was meant.
        raise ValueError(f"name must not be empty, got {name!r}")
    budget = None if budget_usd is None else exact_amount(budget_usd, "budget_usd", "USD")
    if on_exceeded not in ("warn", "raise"):
        raise ValueError(f"on_exceeded must be 'warn' or 'raise', got {on_exceeded!r}")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping, got {type(tags).__name__}")
    return budget


def _new_span(name: str, kind: str, parent: Any, budget_usd: Decimal | Fraction | Budget | None,
              on_exceeded: OnExceeded, tags: Mapping[str, Any] | None, sink: Tracker | None = None) -> Span:
    _instrument.auto_instrument()
    budget = (budget_usd if isinstance(budget_usd, Budget) or budget_usd is None
              else Budget(name, budget_usd, on_exceeded))
    parent_span = user_span_parent() if parent is CURRENT else parent
    return Span(name, kind, parent_span, sink=sink, budget=budget, tags=tags)


@overload
def profile(fn: F, /) -> F: ...


@overload
def profile(fn: None = None, /, *, name: str | None = None, budget_usd: float | None = None,
            on_exceeded: OnExceeded = "warn", tags: Mapping[str, Any] | None = None) -> Callable[[F], F]: ...


def profile(fn: Any = None, /, *, name: str | None = None, budget_usd: float | None = None,
            on_exceeded: OnExceeded = "warn", tags: Mapping[str, Any] | None = None) -> Any:
    """Attribute the LLM calls a function makes (directly or deeper down) to a span named after it.

    Works on sync and async functions, generators and async generators; nested profiles nest.
    `budget_usd` applies to each invocation: past it, warn once, or with `on_exceeded="raise"` refuse
    the next LLM call of that invocation with `BudgetExceededError`.
    """
    budget = _check_options(name, budget_usd, on_exceeded, tags)
    if fn is not None and not callable(fn) and not isinstance(fn, staticmethod | classmethod):
        raise TypeError(f"@tokenspy.profile decorates a function, got {type(fn).__name__}")

    def decorate(f: Any) -> Any:
        if isinstance(f, staticmethod | classmethod):  # placed above @staticmethod / @classmethod
            return type(f)(decorate(f.__func__))
        if isinstance(f, type):
            # The wrapper would be a function: the class name would then no longer be a class
            # (isinstance, subclassing and class attributes would fail far from here).
            raise TypeError(f"@tokenspy.profile decorates a function, got the class {f.__name__}: "
                            "decorate its methods instead")
        span_name = name or _default_name(f)

        def enter() -> Span:
            return _new_span(span_name, "function", CURRENT, budget, on_exceeded, tags)

        if inspect.isasyncgenfunction(f):
            @functools.wraps(f)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
                span = enter()
                agen = f(*args, **kwargs)
                error: BaseException | None = None
                try:
                    to_send: Any = None
                    to_throw: BaseException | None = None
                    here: Span | None = span  # the body's current span: a session it opened stays current
                    while True:
                        with use_span(here):
                            try:
                                item = await (agen.athrow(to_throw) if to_throw is not None
                                              else agen.asend(to_send))
                            except StopAsyncIteration:
                                return
                            here = current_span()
                        to_throw = None
                        try:
                            to_send = yield item
                        except GeneratorExit:
                            with use_span(here):
                                await agen.aclose()
                            raise
                        except BaseException as exc:
                            to_throw = exc
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    span.end(error)

            return agen_wrapper

        if inspect.isgeneratorfunction(f):
            @functools.wraps(f)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                span = enter()
                gen = f(*args, **kwargs)
                error: BaseException | None = None
                try:
                    to_send: Any = None
                    to_throw: BaseException | None = None
                    here: Span | None = span  # the body's current span: a session it opened stays current
                    while True:
                        with use_span(here):
                            try:
                                item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
                            except StopIteration as stop:
                                return stop.value
                            here = current_span()
                        to_throw = None
                        try:
                            to_send = yield item
                        except GeneratorExit:
                            with use_span(here):
                                gen.close()
                            raise
                        except BaseException as exc:
                            to_throw = exc
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    span.end(error)

            return gen_wrapper

        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                span = enter()
                try:
                    with use_span(span):
                        result = await f(*args, **kwargs)
                except BaseException as exc:
                    span.end(exc)
                    raise
                span.end()
                return result

            return async_wrapper

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span = enter()
            try:
                with use_span(span):
                    result = f(*args, **kwargs)
            except BaseException as exc:
                span.end(exc)
                raise
            # A coroutine from a callable that is not `async def` itself (an async function under a
            # plain decorator, an object with `async def __call__`) runs only once awaited: the span
            # stays open until then, or its calls would go unattributed and its budget unenforced.
            # None (most sync results) skips the checks; iscoroutine is cheaper than the ABC check.
            if result is not None and (inspect.iscoroutine(result) or (
                    inspect.isawaitable(result) and not isinstance(result, asyncio.Future))):
                return _awaited_in(span, result)
            span.end()
            return result

        return wrapper

    return decorate(fn) if fn is not None else decorate


def _default_name(f: Any) -> str:
    """The span name of a profiled callable: the function's `__name__` (a method's too), through any
    `functools.partial`, and a callable object's class name. Never a repr: its memory address would
    differ between runs (breaking `compare`) and add a tree row per object."""
    while isinstance(f, functools.partial):
        f = f.func
    name = getattr(f, "__name__", None)
    return name if isinstance(name, str) and name else type(f).__name__


async def _awaited_in(span: Span, awaitable: Awaitable[Any]) -> Any:
    """Await `awaitable` inside `span`, then end it: the async half of a sync wrapper."""
    try:
        with use_span(span):
            result = await awaitable
    except BaseException as exc:
        span.end(exc)
        raise
    span.end()
    return result


class CallCount(int):
    """The number of calls in a session, which also iterates over their records.

    The number is every call the session saw; the records are the most recent ones its buffer keeps
    (`max_records`), so past that buffer `len()` and iteration cover fewer calls than the number.
    """

    _records: list[CallRecord]

    def __new__(cls, total: int, records: list[CallRecord]) -> CallCount:
        obj = super().__new__(cls, total)
        obj._records = records
        return obj

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self._records)

    def __getitem__(self, index: int) -> CallRecord:
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)


_Entry = tuple[Span, Any]  # a session's span and the `use_span` block that made it current (None: re-entered)


class Session(TrackerView):
    """Exactly the LLM calls made inside the block, also while other tasks or threads run concurrently."""

    def __init__(self, name: str = "session", *, budget_usd: float | None = None,
                 on_exceeded: OnExceeded = "warn", tags: Mapping[str, Any] | None = None,
                 parent: Span | None = CURRENT, max_records: int | None = None) -> None:
        if not isinstance(name, str):
            raise TypeError(f"session name must be a string, got {type(name).__name__}")
        amount = _check_options(name, budget_usd, on_exceeded, tags)
        # One budget per session object, whichever tasks enter it and how often: `s.cost` is its spend.
        budget = None if amount is None else Budget(name, amount, on_exceeded)
        if parent is not CURRENT and parent is not None and not isinstance(parent, Span):
            raise TypeError(f"parent must be a tokenspy span, got {type(parent).__name__}")
        self.name = name
        self.tracker = self._view = Tracker(max_records=max_records, name=name)
        self._options = (budget, on_exceeded, tags, parent)
        self.span: Span | None = None  # the span of the latest entry
        # One session object may be entered by several tasks at once, or again inside itself: each
        # context leaves the entry it made. The list keeps the open entries for an exit made in
        # another context than its enter (an async fixture's teardown).
        self._entries: ContextVar[tuple[_Entry, ...]] = ContextVar("tokenspy.session", default=())
        self._open: list[_Entry] = []
        self._lock = threading.Lock()
        # The token of each entry made into an empty stack (by the entry's id): its exit resets the
        # variable, which takes it out of the context. Set to `()` instead, a context variable stays in
        # the context for good: a server thread that enters a new session per request would keep one per
        # request.
        self._first: dict[int, Token[tuple[_Entry, ...]]] = {}

    def _enter(self) -> Session:
        stack = self._entries.get()
        if stack and stack[-1][0] is current_span():
            # Entered again inside its own block: the same level, not a session under itself.
            entry: _Entry = (stack[-1][0], None)
        else:
            budget, on_exceeded, tags, parent = self._options
            span = self.span = _new_span(self.name, "session", parent, budget, on_exceeded, tags, sink=self.tracker)
            use = use_span(span)
            use.__enter__()
            entry = (span, use)
        token = self._entries.set((*stack, entry))
        with self._lock:
            self._open.append(entry)
            if not stack:
                self._first[id(entry)] = token
        return self

    def _exit(self, exc: BaseException | None) -> None:
        stack = self._entries.get()
        with self._lock:  # other threads remove their entries from `_open` meanwhile
            # The innermost entry this context made (by identity: re-entries are equal tuples).
            at = next((i for i in range(len(stack) - 1, -1, -1) if any(e is stack[i] for e in self._open)), None)
            if at is None:
                if not self._open:
                    return
                entry = self._open[-1]
        if at is not None:
            entry = stack[at]
            if at == 0 and (token := self._first.get(id(entry))) is not None:
                try:
                    self._entries.reset(token)
                except (ValueError, RuntimeError):  # made in another context, or used already
                    self._entries.set(())
            else:
                self._entries.set(stack[:at])
        span, use = entry
        with self._lock:
            self._first.pop(id(entry), None)
            for i, e in enumerate(self._open):  # in place: other tasks append to it meanwhile
                if e is entry:
                    del self._open[i]
                    break
            # The span ends with the last entry into it: a task or thread the block started may have
            # entered the session too (its entry inherits this one's span) and still be inside.
            last = not any(e[0] is span for e in self._open)
        if use is not None:
            use.__exit__(None, None, None)
        if last:
            span.end(exc)

    def __enter__(self) -> Session:
        return self._enter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Session:
        return self._enter()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)

    @property
    def cost(self) -> float | None:
        """USD spent by the priced calls of this session; None when every call was unpriced (an
        unknown price is never shown as $0)."""
        return self.tracker.totals().cost_usd

    @property
    def cost_str(self) -> str:
        """The cost as the report shows it: `$0.0035`, `$0.0035 + 1 unpriced` (the calls the amount
        leaves out), or `unpriced`."""
        total = self.tracker.totals()  # one snapshot: the amount and its unpriced calls of the same moment
        return cost_text(total.cost_usd, total.unpriced_calls)

    @property
    def tokens(self) -> int:
        return self.tracker.totals().total_tokens

    @property
    def calls(self) -> CallCount:  # type: ignore[override]
        """A session's calls read as a number (`s.calls == 2`) and iterate as records."""
        # The number from the totals, not len(records): the record buffer is capped, the totals are not.
        return CallCount(self.tracker.totals().calls, self.tracker.calls())

    def records(self) -> list[CallRecord]:
        return self.tracker.calls()

    def __repr__(self) -> str:
        total = self.tracker.totals()  # one snapshot: cost, tokens and calls of the same moment
        return (f"<tokenspy.session {self.name!r}: {cost_text(total.cost_usd, total.unpriced_calls)}, "
                f"{total.total_tokens} tokens, {total.calls} calls>")


def session(name: str = "session", *, budget_usd: float | None = None, on_exceeded: OnExceeded = "warn",
            tags: Mapping[str, Any] | None = None, parent: Span | None = CURRENT) -> Session:
    """`with tokenspy.session("name") as s:` (or `async with`): `s.cost`, `s.tokens`, `s.calls`, `s.stats()`."""
    return Session(name, budget_usd=budget_usd, on_exceeded=on_exceeded, tags=tags, parent=parent)
