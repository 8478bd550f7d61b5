"""The one interception point per SDK: the client's `request()` method, wrapped at class level.

Every openai and anthropic API call goes through `SyncAPIClient.request` / `AsyncAPIClient.request`
(once per logical call; retries happen inside), whichever way the user reached it: `create`, the
`stream()`/`parse()` helpers, `with_raw_response` (even one cached before tokenspy patched anything),
`with_streaming_response`, `client.post(...)`. So the adapters patch only that, and decide per call
(see `_observe.tracking`) whether to track; an untracked call costs one dict lookup and a ContextVar read.
This runs before every tracked request: it is written for few allocations (plain `try` rather than
`guarded()`, nothing built that the call does not need).

What `request()` returns is handled by kind: a model object (finish now), an SDK stream (tracked as
it is consumed, see `_sdk_stream`), or a raw response wrapper (parsed eagerly when that is free: the
SDK caches the parse, so the user's own `parse()` returns the very same object). A body the user
reads as bytes, a tracked stream's included, is accounted from those bytes (see `_RawRead`). A
`parse()` helper's post-parser may reject a billed answer and make `request()` raise: the body is read
before it runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenspy_core import BudgetExceededError
from tokenspy_core._guard import log_internal_error
from tokenspy_core.pricing import provider_at

from ._observe import tracking
from ._sdk_stream import CallLike, CloseHook, StreamTracker, end_on_exception, hook_close, track_stream

__all__ = ["RAW_RESPONSE_HEADER", "Plan", "SdkTypes", "copy_options", "host_provider", "wrap_request",
           "wrap_retry_sleep"]

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # the same in both SDKs (Stainless-generated)


class Plan(StreamTracker):
    """A call tokenspy decided to track, with what the adapter needs to read its response: `on_body`
    for a response object, and, should the response be a stream, `on_item` (it is then that stream's
    tracker). One object per request: the adapters subclass it per endpoint shape."""

    __slots__ = ("_source", "_text", "options", "streamed")
    _source: weakref.ref[Any]  # the tracked stream, once it is one (see `_watch_raw`)

    def __init__(self, call: CallLike, options: Any, streamed: bool) -> None:
        self.call = call
        self.complete = False
        self.options = options  # the request options to send: the caller's, or a copy tokenspy amended
        self.streamed = streamed
        # What a stream's non-empty text deltas go to, per chunk with no test: at the first one, the call's
        # text appender (`_first_text`), which replaces it. Through a weak reference: a plan referring to
        # itself would outlive its request until a garbage collection, and with it the end of a call cut short.
        self._text: Callable[[str], None] = functools.partial(_first_text, weakref.ref(self))

    def on_body(self, body: Any) -> None:
        """A response object, or its JSON dict."""
        raise NotImplementedError

    def first_output(self, item: Any) -> bool:
        """Whether a stream item carries output, as `on_item` counts it for the time to first token.
        Asked only of a stream read as bytes, item by item until the first yes (see `_FirstOutput`)."""
        return False

    def closing(self, response: Any) -> None:
        try:
            super().closing(response)
        finally:
            # This close hook's first call is its last (`once`), and frees it; the reader `_watch_raw`
            # installed goes with it, else it would keep the plan alive from the response, which sits
            # in a reference cycle. Once closed, the body cannot be read.
            attrs = response.__dict__
            for name in ("iter_bytes", "aiter_bytes"):
                reader = attrs.get(name)
                if reader is not None and getattr(reader, "__self__", None) is self:
                    del attrs[name]

    # The tracked stream's response's `iter_bytes` / `aiter_bytes` (see `_watch_raw`).
    def _read_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        return self._reader("iter_bytes", chunk_size, is_async=False)  # type: ignore[no-any-return]

    def _aread_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        return self._reader("aiter_bytes", chunk_size, is_async=True)  # type: ignore[no-any-return]

    def _reader(self, name: str, chunk_size: int | None, *, is_async: bool) -> Any:
        response: Any = self._response()  # alive: this is its method
        if self.reading() or self.call.status != "active":
            # The SDK's own stream reads (once, as its iteration starts): accounted per item.
            return getattr(type(response), name)(response, chunk_size)
        _RawRead(self, self._source).install(response, is_async=is_async)  # from now on, in place of this
        return getattr(response, name)(chunk_size)


def _first_text(plan_ref: weakref.ref[Plan], text: str) -> None:
    plan = plan_ref()
    if plan is not None:
        plan._text = append = plan.call.text_appender()  # the first token: its time is taken here
        append(text)


# id(client.base_url) -> (that URL, its provider). Keyed by identity, the URL kept so the id cannot be
# reused: `str()` of an httpx URL, needed for a key by text, costs more than the rest of this lookup.
_providers: dict[int, tuple[Any, str]] = {}


def host_provider(client: Any, default: str) -> str:
    """The provider the client's base URL names (genai-prices' own URL patterns: `"groq"` for Groq's
    OpenAI-compatible API, `"deepseek"` for DeepSeek's Anthropic-compatible one), else `default` (the
    SDK's own API, and a host no price source knows: a local server, a proxy)."""
    url = client.base_url
    hit = _providers.get(id(url))
    if hit is not None and hit[0] is url:
        return hit[1]
    provider = provider_at(str(url)) or default
    if len(_providers) >= 64:  # clients made per request: each has a URL object of its own
        _providers.clear()
    _providers[id(url)] = (url, provider)
    return provider


class Planner(Protocol):
    def __call__(self, client: Any, options: Any, stream: bool, tags: Mapping[str, Any]) -> Plan | None: ...


@dataclass(frozen=True, slots=True)
class SdkTypes:
    streams: tuple[type, ...]
    async_streams: tuple[type, ...]
    raw: tuple[type, ...]  # raw response wrappers whose parse() is sync
    async_raw: tuple[type, ...]  # ... whose parse() is a coroutine
    all_streams: tuple[type, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_streams", self.streams + self.async_streams)


def copy_options(options: Any, field: str, value: Any) -> Any:
    """The request `options` (the SDK's pydantic `FinalRequestOptions`) with `field` replaced, on a
    shallow copy: the caller's object is never changed."""
    fields_set = getattr(options, "__pydantic_fields_set__", None)
    if fields_set is None:  # pydantic 1
        return options.copy(update={field: value})
    # What pydantic 2's `model_copy(update=...)` does, without its config lookups (half the cost).
    copied = copy.copy(options)
    copied.__dict__[field] = value
    copied.__pydantic_fields_set__.add(field)
    return copied


def _start(planner: Planner, client: Any, options: Any, stream: bool) -> Plan | None:
    """The plan for this request, or None not to track it (the untracked path: one dict lookup)."""
    try:
        tags = tracking(client)
        if tags is None:
            return None
        plan = planner(client, options, bool(stream), tags)
        if plan is not None and not stream and callable(getattr(options, "post_parser", None)):
            _read_before_post_parser(plan)
        return plan
    except BudgetExceededError:
        raise  # the request is not sent
    except Exception as exc:
        log_internal_error("sdk request", exc)
        return None


def _read_before_post_parser(plan: Plan) -> None:
    """Account for the response body before the SDK's post-parser sees it.

    `chat.completions.parse()` (and anthropic's `messages.parse()`) turn the model object into a
    parsed one in a post-parser that raises on an answer it rejects (`LengthFinishReasonError`,
    `ContentFilterFinishReasonError`, a pydantic `ValidationError` on invalid JSON): `request()` then
    raises, though the provider answered and billed the call. Reading the body first keeps its usage.
    """
    options = plan.options
    parser = options.post_parser
    ref = weakref.ref(plan)  # the plan holds the options: no reference cycle through this closure

    def post_parser(parsed: Any) -> Any:
        current = ref()
        if current is not None and current.call.status == "active":
            try:
                current.on_body(parsed)
                current.complete = True  # the body is accounted: `_on_result` does not read it again
            except Exception as exc:
                log_internal_error("sdk response", exc)
        return parser(parsed)

    plan.options = copy_options(options, "post_parser", post_parser)


def _respond(plan: Plan, result: Any, types: SdkTypes) -> None:
    try:
        _on_result(plan, result, types)
    except BudgetExceededError:
        raise
    except Exception as exc:
        log_internal_error("sdk response", exc)


async def _arespond(plan: Plan, result: Any, types: SdkTypes) -> None:
    try:
        if isinstance(result, types.async_raw):
            await _on_async_raw(plan, result, types)
        else:
            _on_result(plan, result, types)
    except BudgetExceededError:
        raise
    except Exception as exc:
        log_internal_error("sdk response", exc)


def wrap_request(planner: Planner, types: SdkTypes, *, is_async: bool) -> Callable[[Any], Any]:
    """A factory for `Patches.wrap`: the wrapped `request(self, cast_to, options, *, stream, stream_cls)`.

    `stream` and `stream_cls` are named (with the SDKs' own defaults) and always passed on: forwarding
    empty `*args`/`**kwargs` costs several times what the untracked path does otherwise. Anything else
    is passed on as given.
    """

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        if is_async:
            @functools.wraps(original)
            async def arequest(self: Any, cast_to: Any, options: Any, *args: Any, stream: bool = False,
                               stream_cls: Any = None, **kwargs: Any) -> Any:
                plan = _start(planner, self, options, stream)
                try:
                    result = await (
                        original(self, cast_to, options if plan is None else plan.options, *args, stream=stream,
                                 stream_cls=stream_cls, **kwargs) if args or kwargs
                        else original(self, cast_to, options if plan is None else plan.options, stream=stream,
                                      stream_cls=stream_cls))
                except BaseException as exc:
                    if plan is not None:
                        _request_failed(plan.call, exc)
                    raise
                if plan is not None:
                    await _arespond(plan, result, types)
                return result

            return arequest

        @functools.wraps(original)
        def request(self: Any, cast_to: Any, options: Any, *args: Any, stream: bool = False,
                    stream_cls: Any = None, **kwargs: Any) -> Any:
            plan = _start(planner, self, options, stream)
            try:
                result = (
                    original(self, cast_to, options if plan is None else plan.options, *args, stream=stream,
                             stream_cls=stream_cls, **kwargs) if args or kwargs
                    else original(self, cast_to, options if plan is None else plan.options, stream=stream,
                                  stream_cls=stream_cls))
            except BaseException as exc:
                if plan is not None:
                    _request_failed(plan.call, exc)
                raise
            if plan is not None:
                _respond(plan, result, types)
            return result

        return request

    return make


def _request_failed(call: CallLike, exc: BaseException) -> None:
    """`request()` raised. A cancellation ends the call as aborted, which estimates the prompt as billed:
    the request may have reached the provider. Not so while the SDK waits to retry: the attempt before
    failed (an HTTP error, a timeout, a connection error), which records no tokens when not retried,
    and the next one is not sent yet. Nothing was billed: the record says so."""
    try:
        if not isinstance(exc, Exception) and getattr(exc, _RETRY_WAIT, False):
            call.set_usage(input_tokens=0, output_tokens=0)
    except Exception as error:
        log_internal_error("sdk call end", error)
    end_on_exception(call, exc)


_RETRY_WAIT = "_tokenspy_retry_wait"


def wrap_retry_sleep(*, is_async: bool) -> Callable[[Any], Any]:
    """A factory for `Patches.wrap` of the SDK's `_sleep_for_retry` (the same in both Stainless-generated
    SDKs): an exception raised while it sleeps between two attempts (a cancellation, Ctrl-C) is marked,
    so that the request's record knows that no attempt was in flight. Runs only when a retry waits."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        if is_async:
            @functools.wraps(original)
            async def asleep(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await original(self, *args, **kwargs)
                except BaseException as exc:
                    _mark_retry_wait(exc)
                    raise

            return asleep

        @functools.wraps(original)
        def sleep(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            except BaseException as exc:
                _mark_retry_wait(exc)
                raise

        return sleep

    return make


def _mark_retry_wait(exc: BaseException) -> None:
    # An exception refusing attributes stays unmarked: its record estimates the prompt, as before.
    with contextlib.suppress(Exception):
        setattr(exc, _RETRY_WAIT, True)


def _on_result(plan: Plan, result: Any, types: SdkTypes) -> None:
    cls = type(result)
    if cls in types.all_streams:  # the common case, without isinstance's subclass walk
        is_async = cls in types.async_streams
        track_stream(result, plan, is_async=is_async)
        _watch_raw(plan, result, is_async=is_async)
    elif isinstance(result, types.all_streams):
        _track(plan, result, types)
    elif isinstance(result, types.raw):
        raw: Any = result
        if _body_unread(plan, raw):
            _finish_when_read(plan, raw.http_response, is_async=False)
            return
        try:
            parsed = raw.parse()
        except Exception:
            parsed = _PARSE_FAILED
        _on_parsed(plan, raw, types, parsed)
    else:
        if not plan.complete:  # not read already before the SDK's post-parser (embeddings have one)
            plan.on_body(result)
        plan.call.finish()


def _track(plan: Plan, stream: Any, types: SdkTypes) -> None:
    is_async = isinstance(stream, types.async_streams)
    track_stream(stream, plan, is_async=is_async, own_class=type(stream) in types.all_streams)
    _watch_raw(plan, stream, is_async=is_async)


def _watch_raw(plan: Plan, stream: Any, *, is_async: bool) -> None:
    """The user may read the tracked stream's body as bytes rather than iterate the stream:
    `iter_lines()` of a raw response's `parse()`d stream, `anthropic.Stream.raw_events(s.response)`,
    `s.response.iter_lines()`. The response's `iter_bytes` becomes the plan's, which hands the SDK's
    own stream the plain bytes (it is accounted per item) and puts a `_RawRead` in place for any other
    reader. Two attribute stores per stream, nothing per chunk; no `_RawRead` until a raw read."""
    plan._source = weakref.ref(stream)
    if is_async:
        stream.response.aiter_bytes = plan._aread_bytes
    else:
        stream.response.iter_bytes = plan._read_bytes


async def _on_async_raw(plan: Plan, raw: Any, types: SdkTypes) -> None:
    if _body_unread(plan, raw):
        _finish_when_read(plan, raw.http_response, is_async=True)
        return
    try:
        parsed = await raw.parse()
    except Exception:
        parsed = _PARSE_FAILED
    _on_parsed(plan, raw, types, parsed)


_PARSE_FAILED: Any = object()


def _body_unread(plan: Plan, raw: Any) -> bool:
    # `with_streaming_response` leaves a non-streamed body on the wire for the user to read (or not);
    # parsing it here would read it for them. A stream's parse() reads nothing: it builds the Stream.
    return not plan.streamed and raw.http_response.request.headers.get(RAW_RESPONSE_HEADER) == "stream"


def _on_parsed(plan: Plan, raw: Any, types: SdkTypes, parsed: Any) -> None:
    """What the raw response's parse() gave (and cached for the user): its stream, or its body."""
    if isinstance(parsed, types.all_streams):
        _track(plan, parsed, types)
        return
    if parsed is _PARSE_FAILED:
        if plan.streamed:  # the user's own parse() will fail the same way: the call ends on close
            _finish_when_read(plan, raw.http_response, is_async=isinstance(raw, types.async_raw))
            return
        # The user's parse() will raise the same (e.g. a `chat.completions.parse` post-parser
        # refusing a truncated answer), but the usage is in the JSON body all the same.
        parsed = raw.http_response.json()
    plan.on_body(parsed)
    plan.call.finish()


def _finish_when_read(plan: Plan, response: Any, *, is_async: bool) -> None:
    """A non-streamed body the user reads (or not) later: account for it when the response closes,
    or, read raw, when the read ends (see `_RawRead`)."""
    if not plan.streamed:
        _RawRead(plan, None).install(response, is_async=is_async)

    def on_close(response: Any) -> None:
        if plan.call.ended:
            return
        try:
            content = response.content
        except Exception:  # httpx's ResponseNotRead: closed unread, or read raw
            # Being read raw right now (httpx closes it at the end of the read, from inside it): the
            # read ends the call. Else closed unread, or part-read, or read past tokenspy (`iter_raw()`).
            if not plan.reading():
                plan.call.abort()
            return
        plan.on_body(json.loads(content))
        plan.call.finish()  # read after `on_body`, which may hand the call on (a background response)

    hook_close(response, on_close, is_async=is_async)


class _RawRead:
    """Accounts for a raw response's body read as bytes rather than through the SDK (`iter_bytes()`,
    `iter_text()`, `iter_lines()`, `read()` of `with_streaming_response`, or of `.http_response`).

    An instance-level `iter_bytes` (`aiter_bytes`) on the httpx response, which httpx's own `read`,
    `iter_text` and `iter_lines` go through, keeps the decoded chunks while the user reads them and
    accounts for the body when the read ends: a JSON body through `on_body`, an SSE body by replaying
    it through a fresh SDK stream into `on_item` (the SDK's own parsing, once, after the last byte).
    When the SDK's tracked stream is what reads (the user iterates `parse()`'s stream), the bytes go
    through untouched: that stream is accounted per item, and this adds nothing per chunk. An SSE body's
    events are also read as they arrive until the first one that carries output (see `_FirstOutput`):
    the call's time to first token is that event's arrival, not the replay's.

    A read the user leaves unfinished is not always ended by the time the response closes: an async
    generator left by `break` is only finalized later by the event loop (after `async with` closed the
    response), and a sync iterator may be kept. The close then accounts for the bytes read so far (see
    `_RawClose`), and the read's own end, whenever it comes, adds nothing.
    """

    __slots__ = ("_hooked", "_parts", "_plan", "_stream")

    def __init__(self, plan: Plan, stream: weakref.ref[Any] | None) -> None:
        self._plan = plan
        # Weakly: anthropic's stream is collectable by reference counting (closing it), keep it so.
        self._stream = stream
        self._parts: list[bytes] | None = None  # the running read's bytes, until it or the close accounts
        self._hooked = False

    def install(self, response: Any, *, is_async: bool) -> None:
        if is_async:
            response.aiter_bytes = functools.partial(self._aiter_bytes, weakref.ref(response))
        else:
            response.iter_bytes = functools.partial(self._iter_bytes, weakref.ref(response))

    def _tee_now(self) -> bool:
        return self._plan.call.status == "active" and not self._plan.reading()

    def _iter_bytes(self, ref: weakref.ref[Any], chunk_size: int | None = None) -> Iterator[bytes]:
        response: Any = ref()  # alive: this is its method
        chunks: Iterator[bytes] = type(response).iter_bytes(response, chunk_size)
        if not self._tee_now():
            return chunks
        gen = self._tee(chunks, self._start_read(response, is_async=False))
        self._plan._gen = weakref.ref(gen)  # a close from inside the read leaves the end to it
        return gen

    def _aiter_bytes(self, ref: weakref.ref[Any], chunk_size: int | None = None) -> AsyncIterator[bytes]:
        response: Any = ref()
        chunks: AsyncIterator[bytes] = type(response).aiter_bytes(response, chunk_size)
        if not self._tee_now():
            return chunks
        gen = self._atee(chunks, self._start_read(response, is_async=True))
        self._plan._gen = weakref.ref(gen)
        return gen

    def _start_read(self, response: Any, *, is_async: bool) -> list[bytes]:
        # Hooked now, after the call's own close hook: the bytes are accounted before that one ends the call.
        if not self._hooked:
            self._hooked = True
            _RawClose(self, is_async=is_async).hook(response, is_async=is_async)
        parts: list[bytes] = []
        self._parts = parts
        return parts

    def _own(self, parts: list[bytes]) -> bool:
        """Whether the read owning `parts` still has them to account for (the close did not take them)."""
        if self._parts is not parts:
            return False
        self._parts = None
        return True

    def _probe(self) -> _FirstOutput | None:
        """What finds the first output of an SSE body as it arrives (None for a JSON body, and for a
        merged call: its time to first token is its outer call's)."""
        plan = self._plan
        try:
            stream = None if self._stream is None or plan.call.merged else self._stream()
            if stream is None:
                return None
            # The client's own decoder (a Bedrock client's reads AWS event streams, not SSE).
            return _FirstOutput(plan, stream._client._make_sse_decoder())
        except Exception as exc:
            log_internal_error("raw response first token", exc)
            return None

    def _tee(self, chunks: Iterator[bytes], parts: list[bytes]) -> Iterator[bytes]:
        try:
            probe = self._probe()
            if probe is not None:
                for chunk in chunks:
                    parts.append(chunk)
                    found = probe.feed(chunk)  # before the user has the chunk: its arrival time
                    yield chunk
                    if found:
                        break
            for chunk in chunks:  # the rest of the same iterator, with nothing more per chunk
                parts.append(chunk)
                yield chunk
        except BaseException as exc:
            if self._own(parts):
                self._end(self._account(parts, complete=False), exc)
            raise
        if self._own(parts):
            self._end(self._account(parts, complete=True), None)

    async def _atee(self, chunks: AsyncIterator[bytes], parts: list[bytes]) -> AsyncIterator[bytes]:
        try:
            probe = self._probe()
            if probe is not None:
                async for chunk in chunks:
                    parts.append(chunk)
                    found = probe.feed(chunk)
                    yield chunk
                    if found:
                        break
            async for chunk in chunks:
                parts.append(chunk)
                yield chunk
        except BaseException as exc:
            if self._own(parts):
                self._end(await self._aaccount(parts, complete=False), exc)
            raise
        if self._own(parts):
            self._end(await self._aaccount(parts, complete=True), None)

    def _take_unfinished(self) -> list[bytes] | None:
        """At close: the bytes of a read that has not ended, unless it is the read closing the response
        (httpx closes it from inside the read at the end of the body: that read accounts for itself)."""
        parts = self._parts
        if parts is None or self._plan.call.status != "active" or self._plan.reading():
            return None
        self._parts = None
        return parts

    def closing(self) -> None:
        parts = self._take_unfinished()
        if parts is not None:
            self._account(parts, complete=False)  # the call's own close hook, next, ends the call

    async def aclosing(self) -> None:
        parts = self._take_unfinished()
        if parts is not None:
            await self._aaccount(parts, complete=False)

    # -- accounting (once, at the end of the read) ----------------------------------------------------
    def _fresh_stream(self, parts: list[bytes]) -> Any:
        """A new, untracked SDK stream over the bytes read (None for a JSON body, or a stream gone)."""
        stream = None if self._stream is None else self._stream()
        if stream is None:
            return None
        response = stream.response
        replay = type(response)(200, headers={"content-type": "text/event-stream"}, content=b"".join(parts),
                                request=response.request)
        return type(stream)(cast_to=stream._cast_to, response=replay, client=stream._client,
                            options=stream._options)

    def _replay(self, parts: list[bytes], *, complete: bool) -> Any:
        """A JSON body is accounted here; an SSE body gives the fresh stream to feed the call from."""
        plan = self._plan
        if plan.call.status != "active":
            return None
        if self._stream is None:
            if complete:
                plan.on_body(json.loads(b"".join(parts)))
            return None
        return self._fresh_stream(parts)

    def _account(self, parts: list[bytes], *, complete: bool) -> BaseException | None:
        """Feed the call from the bytes read; the SDK's error for an in-band error event, if any."""
        try:
            fresh = self._replay(parts, complete=complete)
            items = iter(()) if fresh is None else iter(fresh)
            while True:
                try:
                    item = next(items)
                except StopIteration:
                    return None
                except Exception as exc:  # e.g. openai's APIError for an error event
                    return exc if complete else None
                self._plan.on_item(item)
        except Exception as exc:
            log_internal_error("raw response body", exc)
            return None

    async def _aaccount(self, parts: list[bytes], *, complete: bool) -> BaseException | None:
        """`_account` for an async stream: only the iteration differs."""
        try:
            fresh = self._replay(parts, complete=complete)
            if fresh is None:
                return None
            items = fresh.__aiter__()
            while True:
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return None
                except Exception as exc:
                    return exc if complete else None
                self._plan.on_item(item)
        except Exception as exc:
            log_internal_error("raw response body", exc)
            return None

    def _end(self, error: BaseException | None, exc: BaseException | None) -> None:
        """The read ended: to the end (`exc` None), stopped early (GeneratorExit) or failed."""
        plan = self._plan
        if isinstance(exc, GeneratorExit):  # the reader stopped: partial, unless the answer was complete
            plan.stopped()
        elif exc is not None:
            plan.errored(exc)
        elif error is not None:
            plan.errored(error)
        else:
            plan.exhausted()


# A stream whose first output has not come after this many events is not searched further as it
# arrives: its time to first token is then the replay's, at the end of the read.
_PROBE_EVENTS = 64


def _event_end(data: bytes) -> int:
    """The end of the last complete server-sent event in `data` (a blank line ends one), 0 if none."""
    end = 0
    for separator in (b"\n\n", b"\r\r", b"\r\n\r\n"):
        at = data.rfind(separator)
        if at >= 0 and at + len(separator) > end:
            end = at + len(separator)
    return end


class _FirstOutput:
    """Finds, in a streamed body read as bytes, the event that carries the first output, as it arrives,
    and marks the call's first token then, as the tracked stream does at that item. The events are
    split by the SDK's own SSE decoder and their JSON read as dicts (`Plan.first_output`), not built
    into the SDK's models: a few µs an event, and only until the first output (after openai's role
    chunk, anthropic's `message_start`, ...). The call itself is still fed once, at the end of the
    read (`_RawRead._account`)."""

    __slots__ = ("_decoder", "_left", "_pending", "_plan", "_tail")

    def __init__(self, plan: Plan, decoder: Any) -> None:
        self._plan = plan
        self._decoder = decoder
        self._pending: list[bytes] = []  # the bytes of an event not complete yet
        self._tail = b""  # their last bytes: the blank line ending an event may straddle two chunks
        self._left = _PROBE_EVENTS

    def _complete(self, chunk: bytes) -> bytes | None:
        """The events `chunk` completes, if any."""
        window = self._tail + chunk
        end = _event_end(window)
        self._pending.append(chunk)
        if not end:
            self._tail = window[-3:]
            return None
        data = b"".join(self._pending)
        end += len(data) - len(window)
        rest = data[end:]
        self._pending = [rest] if rest else []
        self._tail = rest[-3:]
        return data[:end]

    def feed(self, chunk: bytes) -> bool:
        """Whether the search is over: the first output came (and is marked), or it is given up."""
        try:
            events = self._complete(chunk)
            if events is None:
                return False
            for event in self._decoder.iter_bytes(iter((events,))):
                data = event.data
                if data.startswith("[DONE]"):
                    return True
                try:
                    item = json.loads(data)
                except ValueError:
                    continue  # not JSON: no output the SDK would hand on
                self._left -= 1
                if self._plan.first_output(item):
                    self._plan.call.mark_first_token()
                    return True
                if self._left <= 0:
                    return True
            return False
        except Exception as exc:
            log_internal_error("raw response first token", exc)
            return True


class _RawClose(CloseHook):
    """Runs before the call's own close hook of a response read raw: accounts for the bytes of a read
    that has not ended (see `_RawRead`). Async, since replaying an async stream's bytes is."""

    __slots__ = ("_is_async", "_read")
    once = True

    def __init__(self, read: _RawRead, *, is_async: bool) -> None:
        self._read = read
        self._is_async = is_async

    def closing(self, response: Any) -> None:
        if not self._is_async:
            self._read.closing()

    async def _aclose(self) -> None:
        try:
            await self._read.aclosing()
        except Exception as exc:  # BudgetExceededError included: the response must close all the same
            log_internal_error("response close", exc)
        await super()._aclose()
