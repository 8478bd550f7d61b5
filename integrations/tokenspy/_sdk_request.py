"""The one interception point per SDK: the client's `request()` method, wrapped at class level.

Every openai and anthropic API call goes through `SyncAPIClient.request` / `AsyncAPIClient.request`
(once per logical call; retries happen inside), whichever way the user reached it: `create`, the
`stream()`/`parse()` helpers, `with_raw_response` (even one cached before tokenspy patched anything),
`with_streaming_response`, `client.post(...)`. So the adapters patch only that, and decide per call
(see `_observe.tracking`) whether to track; an untracked call costs one dict lookup and a ContextVar read.

What `request()` returns is handled by kind: a model object (finish now), an SDK stream (tracked as
it is consumed, see `_sdk_stream`), or a raw response wrapper (parsed eagerly when that is free: the
SDK caches the parse, so the user's own `parse()` returns the very same object).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenspy_core._guard import guarded

from ._sdk_stream import CallLike, StreamTracker, end_on_exception, hook_close, track_stream

__all__ = ["Plan", "SdkTypes", "wrap_request"]

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # the same in both SDKs (Stainless-generated)


@dataclass(slots=True)
class Plan:
    """A call tokenspy decided to track, with what the adapter needs to read its response."""

    call: CallLike
    options: Any  # the request options to send: the caller's, or a copy tokenspy amended
    streamed: bool
    new_tracker: Callable[[CallLike], StreamTracker]
    on_body: Callable[[CallLike, Any], None]  # a response object or its JSON dict


class Planner(Protocol):
    def __call__(self, client: Any, options: Any, stream: bool) -> Plan | None: ...


@dataclass(frozen=True, slots=True)
class SdkTypes:
    streams: tuple[type, ...]
    async_streams: tuple[type, ...]
    raw: tuple[type, ...]  # raw response wrappers whose parse() is sync
    async_raw: tuple[type, ...]  # ... whose parse() is a coroutine

    @property
    def all_streams(self) -> tuple[type, ...]:
        return self.streams + self.async_streams


def _options_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("options")


def _with_options(args: tuple[Any, ...], kwargs: dict[str, Any], options: Any) -> tuple[Any, ...]:
    if len(args) > 1:
        return (args[0], options, *args[2:])
    kwargs["options"] = options
    return args


def _start(planner: Planner, client: Any, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> tuple[Plan | None, tuple[Any, ...]]:
    plan: Plan | None = None
    with guarded("sdk request"):  # BudgetExceededError passes through: the request is not sent
        options = _options_of(args, kwargs)
        plan = planner(client, options, bool(kwargs.get("stream", False)))
        if plan is not None and plan.options is not options:
            args = _with_options(args, kwargs, plan.options)
    return plan, args


def wrap_request(planner: Planner, types: SdkTypes, *, is_async: bool) -> Callable[[Any], Any]:
    """A factory for `Patches.wrap`: the wrapped `request(self, cast_to, options, *, stream, stream_cls)`."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        if is_async:
            @functools.wraps(original)
            async def arequest(self: Any, *args: Any, **kwargs: Any) -> Any:
                plan, args = _start(planner, self, args, kwargs)
                if plan is None:
                    return await original(self, *args, **kwargs)
                try:
                    result = await original(self, *args, **kwargs)
                except BaseException as exc:
                    end_on_exception(plan.call, exc)
                    raise
                with guarded("sdk response"):
                    if isinstance(result, types.async_raw):
                        await _on_async_raw(plan, result, types)
                    else:
                        _on_result(plan, result, types)
                return result

            return arequest

        @functools.wraps(original)
        def request(self: Any, *args: Any, **kwargs: Any) -> Any:
            plan, args = _start(planner, self, args, kwargs)
            if plan is None:
                return original(self, *args, **kwargs)
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                end_on_exception(plan.call, exc)
                raise
            with guarded("sdk response"):
                _on_result(plan, result, types)
            return result

        return request

    return make


def _on_result(plan: Plan, result: Any, types: SdkTypes) -> None:
    if isinstance(result, types.all_streams):
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
        plan.on_body(plan.call, result)
        plan.call.finish()


def _track(plan: Plan, stream: Any, types: SdkTypes) -> None:
    track_stream(stream, plan.new_tracker(plan.call), is_async=isinstance(stream, types.async_streams),
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
    plan.on_body(plan.call, parsed)
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
        plan.on_body(call, json.loads(content))
        call.finish()

    hook_close(response, on_close, is_async=is_async)
