"""Streams: the user keeps the SDK's own stream object; tokenspy watches what flows through it.

`track_stream(stream, tracker)` changes two things on that one object, and nothing else:

- its class becomes a cached subclass of its own class (so `isinstance(s, openai.Stream)` holds)
  whose `__iter__`/`__next__` (`__aiter__`/`__anext__`) feed each item the SDK's own ones give to the
  tracker, O(1), and hand it on unchanged and at once (the tracker can hide one item: the usage-only
  chunk tokenspy asked for), then end the call on exhaustion or error. The iterator a `for` loop gets
  also notices a consumer that stops early (`break`, an exception in the loop body): dropped, it ends
  the call. (A stream whose class cannot be switched gets its `_iterator`, where both SDKs pull items
  from, wrapped instead.)
- its HTTP response gets an instance-level `close`/`aclose` that ends the call first. Every way of
  closing goes through it: `Stream.close()`, `with`/`async with`, the SDK helpers (`messages.stream()`,
  `chat.completions.stream()`) which close the response directly, and garbage collection. The first
  close removes it again (the call is then ended, or being ended by the generator that closed it).

Ends: exhaustion finishes; an error fails (cancellation aborts); an early stop or close finishes if the
provider's final event already arrived (usage is complete), else aborts (`partial=True`). The first end
wins, so overlapping signals are harmless.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import FrameType, MethodType
from typing import Any

from tokenspy_core import BudgetExceededError, Call, MergedCall
from tokenspy_core._guard import log_internal_error
from tokenspy_core.at_exit import end_open_at_exit

__all__ = ["CloseHook", "StreamTracker", "end_on_exception", "hook_close", "track_stream"]

CallLike = Call | MergedCall
_weak = weakref.ref
_ATTR = "_tokenspy_stream"


def _is_cancellation(exc: BaseException) -> bool:
    # asyncio's CancelledError is matched by name, to not import asyncio for it.
    return isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError"


def end_on_exception(call: CallLike, exc: BaseException) -> None:
    """An exception ended the call: cancellation aborts it, anything else fails it."""
    try:
        if _is_cancellation(exc):
            call.abort()
        else:
            call.fail(exc)
    except BudgetExceededError:
        raise
    except Exception as exc:
        log_internal_error("sdk call end", exc)


def _end(call: CallLike, finished: bool) -> None:
    # `guarded("stream end")` as a plain try: a context manager costs more than the statement.
    try:
        if finished:
            call.finish()
        else:
            call.abort()
    except BudgetExceededError:
        raise
    except Exception as exc:
        log_internal_error("stream end", exc)


class CloseHook:
    """Runs `closing(response)` before `response.close()` / `await response.aclose()`, for one response
    object: an instance-level method that then calls the close it replaces. Holds the response weakly:
    it must stay collectable by reference counting."""

    __slots__ = ("_original", "_previous", "_response")
    # Whether the first close is the last one this hook needs to see: it is then removed (the response's
    # `close` is the one it replaced again). That frees the hook, and all it holds, by reference counting:
    # an httpx response sits in a reference cycle, and whatever hangs off it lives until the next garbage
    # collection otherwise (doubling the cyclic garbage of every openai request).
    once = False

    def closing(self, response: Any) -> None:
        raise NotImplementedError

    def hook(self, response: Any, *, is_async: bool) -> None:
        # Plain attribute access rather than `response.__dict__`: building an instance's dict, and
        # adding a key to it, cost more than all the rest of this. Another instance-level close (another
        # hook) is kept and called; the class's own is called as `original(response)`, so that the
        # response is not held strongly.
        if is_async:
            original = type(response).aclose
            current = response.aclose
            response.aclose = self._aclose
        else:  # spelled out for `close`: attribute syntax is cheaper than getattr/setattr by name
            original = type(response).close
            current = response.close
            response.close = self._close
        self._response = _weak(response)
        self._original = original
        own = type(current) is MethodType and current.__self__ is response and current.__func__ is original
        self._previous = None if own else current

    def _notify(self, response: Any) -> None:
        try:
            self.closing(response)
        except BudgetExceededError:
            raise
        except Exception as exc:
            log_internal_error("response close", exc)

    def _unhook(self, response: Any, name: str) -> None:
        try:
            current = getattr(response, name)
            # Only while it is this hook: another one installed later keeps this one as its `previous`.
            if type(current) is MethodType and current.__self__ is self:
                previous = self._previous
                if previous is None:
                    delattr(response, name)
                else:
                    setattr(response, name, previous)
        except Exception as exc:
            log_internal_error("response close", exc)

    def _close(self) -> None:
        response = self._response()
        if response is not None:
            self._notify(response)
            previous = self._previous
            if self.once:
                self._unhook(response, "close")
            previous() if previous is not None else self._original(response)

    async def _aclose(self) -> None:
        response = self._response()
        if response is not None:
            self._notify(response)
            previous = self._previous
            if self.once:
                self._unhook(response, "aclose")
            await (previous() if previous is not None else self._original(response))


class _OnClose(CloseHook):
    __slots__ = ("_on_close",)

    def __init__(self, on_close: Callable[[Any], None]) -> None:
        self._on_close = on_close

    def closing(self, response: Any) -> None:
        self._on_close(response)


def hook_close(response: Any, on_close: Callable[[Any], None], *, is_async: bool) -> None:
    """Call `on_close(response)` before `response.close()` / `await response.aclose()`."""
    _OnClose(on_close).hook(response, is_async=is_async)


class StreamTracker(CloseHook):
    """Feeds one streamed call from the items its consumer pulls, and ends it exactly once.

    Subclasses implement `on_item` (per item: O(1), attribute reads and appending text) and set
    `complete` once the provider's final usage arrived. It is also the close hook of the stream's
    response (one object per stream rather than two).
    """

    __slots__ = ("__weakref__", "_gen", "call", "complete")
    # After the first close the call is ended, or is being ended by the generator that closed it.
    once = True
    # Set by the subclass when made (`complete` False), and by `track_stream` (`_gen`): one
    # `__init__` less per request.
    call: CallLike
    complete: bool
    _gen: weakref.ref[Any]

    def on_item(self, item: Any) -> bool:
        """Account for `item`; True hides it from the consumer."""
        raise NotImplementedError

    def settle(self) -> None:
        """Account for what `on_item` left for later (to hand the consumer an item sooner); called
        before the call ends."""

    def _settle(self) -> None:
        try:
            self.settle()
        except BudgetExceededError:
            raise
        except Exception as exc:
            log_internal_error("stream end", exc)

    # -- ends ---------------------------------------------------------------------------------
    # Whether the stream always ends with a final event that sets `complete` (Responses' final event,
    # anthropic's message_delta): one that runs out before it was cut short, as if its reader had stopped
    # there. Not Chat Completions, whose servers may send no usage chunk at all.
    ends_with_final_event = False

    def exhausted(self) -> None:
        if self.ends_with_final_event and not self.complete:
            self.stopped()
            return
        self._settle()
        _end(self.call, True)

    def errored(self, exc: BaseException) -> None:
        self._settle()
        if self.complete and _is_cancellation(exc):
            _end(self.call, True)  # cancelled after the provider's final usage: the answer was whole
        else:
            # Billed for its prompt if the adapter saw the answer begin (`call.mark_answered`).
            end_on_exception(self.call, exc)

    def stopped(self) -> None:
        """The consumer stopped, closed the stream or dropped it."""
        self._settle()
        _end(self.call, self.complete)

    def reading(self) -> bool:
        """Whether the generator that reads this call's body (the SDK stream's, or a raw read's) is
        running: a close from inside it is the end of the body, which that generator accounts for."""
        ref = getattr(self, "_gen", None)  # unset until the body is read as a stream
        gen = None if ref is None else ref()
        return gen is not None and bool(getattr(gen, "gi_running", False) or getattr(gen, "ag_running", False))

    def reading_here(self) -> bool:
        """`reading()`, and the close comes from inside that generator. A close from another thread (a
        "stop" button closing the stream a worker reads) or task, while the reader waits for more of
        the body, is the consumer stopping: the read error it makes the reader raise is not the call's."""
        if not self.reading():
            return False
        gen = self._gen()
        frame = getattr(gen, "gi_frame", None) or getattr(gen, "ag_frame", None)
        here: FrameType | None = sys._getframe(1)
        while here is not None:
            if here is frame:
                return True
            here = here.f_back
        return False

    def closing(self, response: Any) -> None:
        """The stream's response is being closed."""
        if self.call.status != "active" or self.reading_here():  # `call.ended`, without a property call
            return
        self.stopped()

    def __del__(self) -> None:
        # The stream was collected: the consumer is gone. (`stopped` is guarded; at interpreter
        # shutdown nothing is safe to touch. A copy `copy.deepcopy` gave up on half-way has no call.)
        call = getattr(self, "call", None)
        if call is not None and call.status == "active" and not sys.is_finalizing():
            self.stopped()


def _stop_at_exit(tracker: StreamTracker) -> None:
    if tracker.call.status == "active":
        tracker.stopped()


end_open_at_exit(StreamTracker, _stop_at_exit)


class _JsonView:
    """A JSON dict read by attribute, as the SDK's models are: the items of a stream made with a
    plain `stream_cls` (`client.post(..., stream_cls=Stream[object])`) are the decoded dicts."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return _viewed(self._data.get(name))


def _viewed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _JsonView(value)
    if isinstance(value, list):
        return [_viewed(v) for v in value]
    return value


def _account(on_item: Callable[[Any], bool], item: Any) -> bool:
    """`on_item(item)`, reading a plain JSON item through a view (the slow path, for items the
    adapter's attribute reads failed on)."""
    return on_item(_JsonView(item) if isinstance(item, Mapping) else item)


def _skipping(on_item: Callable[[Any], bool], item: Any) -> bool:
    try:
        return on_item(item)
    except Exception as exc:
        log_internal_error("stream item", exc)
        return False


def _disabled(exc: Exception, on_item: Callable[[Any], bool], item: Any) -> tuple[Callable[[Any], bool], bool]:
    """After `on_item(item)` raised: (what accounts the following items, whether to hide `item`).

    An item tokenspy cannot read (a gateway's `"choices": null`) is skipped, and so is every later one
    that raises: the stream goes on, and so does the accounting of the items that can be read."""
    if isinstance(item, Mapping):
        on_item = functools.partial(_account, on_item)
        try:
            return on_item, on_item(item)
        except Exception as retried:
            exc = retried
    log_internal_error("stream item", exc)
    return functools.partial(_skipping, on_item), False


def _items(inner: Iterator[Any], tracker: StreamTracker, observed: Any = None) -> Iterator[Any]:
    """`observed`: the stream whose SDK `__iter__` reports each item to its observer (anthropic's, see
    `_observed_iter`), done here in its place."""
    on_item: Callable[[Any], bool] = tracker.on_item
    try:
        for item in inner:
            if observed is not None and (observer := observed._observer) is not None:
                observer.item(item)
            try:
                hide = on_item(item)
            except Exception as exc:
                on_item, hide = _disabled(exc, on_item, item)
            if not hide:
                yield item
    except GeneratorExit:
        tracker.stopped()
        raise
    except BaseException as exc:
        tracker.errored(exc)
        raise
    tracker.exhausted()


async def _aitems(inner: AsyncIterator[Any], tracker: StreamTracker, observed: Any = None, *,
                  owned: bool = False) -> AsyncIterator[Any]:
    """`owned`: `inner` is the SDK's own `__aiter__` generator, made for this loop alone. `observed`: as
    for `_items`."""
    on_item: Callable[[Any], bool] = tracker.on_item
    try:
        async for item in inner:
            if observed is not None and (observer := observed._observer) is not None:
                observer.item(item)
            try:
                hide = on_item(item)
            except Exception as exc:
                on_item, hide = _disabled(exc, on_item, item)
            if not hide:
                yield item
    except GeneratorExit:
        tracker.stopped()
        if owned:
            # Closed now, as the consumer's loop would have closed it without tokenspy. Left to the
            # event loop's finalizer, its close would be queued behind this one and could run while
            # `asyncio.run()` shuts the SDK's inner generators down ("aclose(): asynchronous
            # generator is already running", logged at shutdown).
            try:
                await inner.aclose()  # type: ignore[attr-defined]
            except RuntimeError:
                # "already running": `asyncio.run()`'s shutdown is closing it at the same moment (this
                # close, queued by the event loop, ran late). It is closed either way.
                pass
            except Exception as exc:  # the SDK's own close failing is not the consumer's `break` failing
                log_internal_error("stream close", exc)
        raise
    except BaseException as exc:
        tracker.errored(exc)
        raise
    tracker.exhausted()


class _AsyncConsumer:
    """`async for`'s iterator; a plain object, so dropping it after `break` is noticed at once
    (an async generator would only be finalized later by the event loop)."""

    __slots__ = ("_it", "_tracker")

    def __init__(self, it: AsyncIterator[Any], tracker: StreamTracker) -> None:
        self._it = it
        self._tracker = tracker

    def __aiter__(self) -> _AsyncConsumer:
        return self

    def __anext__(self) -> Any:
        return self._it.__anext__()

    def __del__(self) -> None:
        if not sys.is_finalizing() and not self._tracker.call.ended:
            self._tracker.stopped()


def _pull(tracker: StreamTracker, sdk_next: Callable[[Any], Any], stream: Any) -> Any:
    """`next(stream)` on a tracked stream: the SDK's own `__next__`, each item accounted."""
    while True:
        try:
            item = sdk_next(stream)
        except StopIteration:
            tracker.exhausted()
            raise
        except BaseException as exc:
            tracker.errored(exc)
            raise
        if _handed_on(tracker, item):
            return item


async def _apull(tracker: StreamTracker, sdk_anext: Callable[[Any], Any], stream: Any) -> Any:
    while True:
        try:
            item = await sdk_anext(stream)
        except StopAsyncIteration:
            tracker.exhausted()
            raise
        except BaseException as exc:
            tracker.errored(exc)
            raise
        if _handed_on(tracker, item):
            return item


def _handed_on(tracker: StreamTracker, item: Any) -> bool:
    """Account for one item pulled with `next()`; False for the item tokenspy hides. (A bug in the
    accounting hands the item on: the stream goes on.)"""
    try:
        return not tracker.on_item(item)
    except Exception as exc:
        return not _disabled(exc, tracker.on_item, item)[1]


def _plain_iter(self: Any) -> Iterator[Any]:
    for item in self._iterator:  # noqa: UP028 - the SDK's own words, compared instruction for instruction
        yield item


async def _plain_aiter(self: Any) -> AsyncIterator[Any]:
    async for item in self._iterator:
        yield item


# anthropic's: each item is reported to the HTTP stream's observer (its tracing hook) as it is handed on.
def _observed_iter(self: Any) -> Iterator[Any]:
    for item in self._iterator:
        if (observer := self._observer) is not None:
            observer.item(item)
        yield item


async def _observed_aiter(self: Any) -> AsyncIterator[Any]:
    async for item in self._iterator:
        if (observer := self._observer) is not None:
            observer.item(item)
        yield item


def _same_code(func: Any, reference: Callable[..., Any]) -> bool:
    """`func` compiles to exactly `reference`'s instructions and names: iterating it is iterating
    `self._iterator` (checked, not assumed, so that an SDK release adding work there keeps it)."""
    code = getattr(func, "__code__", None)
    ref = reference.__code__
    return (code is not None and code.co_code == ref.co_code and code.co_names == ref.co_names
            and code.co_varnames == ref.co_varnames)


_subclasses: dict[type, type] = {}  # stream class -> its tracked subclass; a tracked subclass -> itself


def _tracked_class(cls: type, *, is_async: bool) -> type:
    """`cls` whose iteration feeds the stream's tracker; made once per stream class.

    The stream's `_iterator` stays the SDK's, and so do `__next__`/`__anext__`. A `for` loop goes
    through `_items` (which also notices an early stop: dropped after `break`, it is closed at once by
    reference counting) in place of the SDK's `__iter__` when that only re-yields `self._iterator`
    (openai's) or also reports each item to the stream's observer (anthropic's, which `_items` then
    does), over the SDK's `__iter__` otherwise (an SDK release that does more there). The
    chain of running generators is walked by every exception raised under it (the SDKs raise and catch
    several per chunk), so a generator level costs more than its own resumption: one is saved where the
    SDK's adds nothing.

    A plain one-level subclass with no slots, so its instances have the SDK class's layout and
    `__class__` can be switched on an existing stream.
    """
    sub = _subclasses.get(cls)
    if sub is not None:
        return sub
    namespace: dict[str, Any] = {"__slots__": (), "__module__": cls.__module__,
                                 "__qualname__": cls.__qualname__}
    if is_async:
        sdk_aiter = cls.__aiter__  # type: ignore[attr-defined]
        sdk_anext = cls.__anext__  # type: ignore[attr-defined]

        plain = _same_code(sdk_aiter, _plain_aiter)
        aobserved = not plain and _same_code(sdk_aiter, _observed_aiter)

        def __aiter__(self: Any) -> AsyncIterator[Any]:
            tracker: StreamTracker | None = getattr(self, _ATTR, None)
            if tracker is None:
                return sdk_aiter(self)  # type: ignore[no-any-return]
            if plain:
                return _AsyncConsumer(_aitems(self._iterator, tracker), tracker)
            if aobserved:
                return _AsyncConsumer(_aitems(self._iterator, tracker, self), tracker)
            return _AsyncConsumer(_aitems(sdk_aiter(self), tracker, owned=True), tracker)

        def __anext__(self: Any) -> Any:
            tracker = getattr(self, _ATTR, None)
            return sdk_anext(self) if tracker is None else _apull(tracker, sdk_anext, self)

        namespace["__aiter__"] = __aiter__
        namespace["__anext__"] = __anext__
    else:
        sdk_iter = cls.__iter__  # type: ignore[attr-defined]
        sdk_next = cls.__next__  # type: ignore[attr-defined]

        # A stream of this class may have no tracker: one made with `type(stream)(...)`.
        plain = _same_code(sdk_iter, _plain_iter)
        observed = not plain and _same_code(sdk_iter, _observed_iter)

        def __iter__(self: Any) -> Iterator[Any]:
            tracker = getattr(self, _ATTR, None)
            if tracker is None:
                return sdk_iter(self)  # type: ignore[no-any-return]
            if observed:
                return _items(self._iterator, tracker, self)
            return _items(self._iterator if plain else sdk_iter(self), tracker)

        def __next__(self: Any) -> Any:
            tracker = getattr(self, _ATTR, None)
            return sdk_next(self) if tracker is None else _pull(tracker, sdk_next, self)

        namespace["__iter__"] = __iter__
        namespace["__next__"] = __next__
    # Same name, module and qualname: reprs and error messages read exactly as the SDK's.
    sub = _subclasses[cls] = type(cls.__name__, (cls,), namespace)
    _subclasses[sub] = sub
    return sub


def track_stream(stream: Any, tracker: StreamTracker, *, is_async: bool, own_class: bool = True) -> None:
    """Make `stream` (an openai or anthropic `Stream`/`AsyncStream`) feed `tracker`.

    `own_class`: the stream is of the SDK's own class (not a subclass some other instrumentation made,
    possibly one per call): only then is it switched to a tracked subclass, cached per class. Otherwise
    (or should the class refuse) its `_iterator` is wrapped instead: an early stop is then seen at
    close or collection.
    """
    inner = stream._iterator  # anthropic builds it lazily (a cached_property): this builds it now
    # A close from inside the SDK's generator (the body ended or failed) is left to whoever runs it.
    tracker._gen = _weak(inner)
    stream._tokenspy_stream = tracker  # `_ATTR`; not through `__dict__`, which would build the instance dict
    if own_class:
        cls = type(stream)
        try:
            stream.__class__ = _subclasses.get(cls) or _tracked_class(cls, is_async=is_async)
        except TypeError:
            own_class = False
    if not own_class:
        stream._iterator = _aitems(inner, tracker) if is_async else _items(inner, tracker)
    tracker.hook(stream.response, is_async=is_async)
