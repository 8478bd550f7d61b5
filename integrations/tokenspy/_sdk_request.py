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
SDK caches the parse, so the user's own `parse()` returns the very same object).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenspy_core import BudgetExceededError
from tokenspy_core._guard import log_internal_error

from ._observe import tracking
from ._sdk_stream import CallLike, StreamTracker, end_on_exception, hook_close, track_stream

__all__ = ["Plan", "SdkTypes", "wrap_request"]

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # the same in both SDKs (Stainless-generated)


class Plan(StreamTracker):
    """A call tokenspy decided to track, with what the adapter needs to read its response: `on_body`
    for a response object, and, should the response be a stream, `on_item` (it is then that stream's
    tracker). One object per request: the adapters subclass it per endpoint shape."""

    __slots__ = ("options", "streamed")

    def __init__(self, call: CallLike, options: Any, streamed: bool) -> None:
        self.call = call
        self.complete = False
        self.options = options  # the request options to send: the caller's, or a copy tokenspy amended
        self.streamed = streamed

    def on_body(self, body: Any) -> None:
        """A response object, or its JSON dict."""
        raise NotImplementedError


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


def _start(planner: Planner, client: Any, options: Any, stream: bool) -> Plan | None:
    """The plan for this request, or None not to track it (the untracked path: one dict lookup)."""
    try:
        tags = tracking(client)
        return None if tags is None else planner(client, options, bool(stream), tags)
    except BudgetExceededError:
        raise  # the request is not sent
    except Exception as exc:
        log_internal_error("sdk request", exc)
        return None


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
                        end_on_exception(plan.call, exc)
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
                    end_on_exception(plan.call, exc)
                raise
            if plan is not None:
                _respond(plan, result, types)
            return result

        return request

    return make


def _on_result(plan: Plan, result: Any, types: SdkTypes) -> None:
    cls = type(result)
    if cls in types.all_streams:  # the common case, without isinstance's subclass walk
        track_stream(result, plan, is_async=cls in types.async_streams)
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
        plan.on_body(result)
        plan.call.finish()


def _track(plan: Plan, stream: Any, types: SdkTypes) -> None:
    track_stream(stream, plan, is_async=isinstance(stream, types.async_streams),
                 own_class=type(stream) in types.all_streams)


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
    """A non-streamed body the user reads (or not) later: account for it when the response closes."""
    call = plan.call

    def on_close(response: Any) -> None:
        if call.ended:
            return
        try:
            content = response.content
        except Exception:  # httpx's ResponseNotRead
            if not response.is_stream_consumed:
                call.abort()  # closed unread
            # else: being read right now; httpx closes it itself at the end, the user closes it again
            return
        plan.on_body(json.loads(content))
        call.finish()

    hook_close(response, on_close, is_async=is_async)
