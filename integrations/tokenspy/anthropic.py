"""The anthropic SDK adapter: Messages (and beta Messages), streamed or not, `messages.stream()` too.

`install()` / `uninstall()` patch anthropic's `SyncAPIClient.request` / `AsyncAPIClient.request`; the
`messages.stream()` helper does not call `Messages.create` but does go through `request()`, so one
patch sees both (see `_sdk_request`). This module imports anthropic: import it only once anthropic is
imported.

Stream usage, as Anthropic reports it: `message_start` carries the input and cache counts (and a
placeholder `output_tokens`, 1), each `message_delta` the cumulative output and possibly the input and
cache counts again. tokenspy keeps the latest value of each RAW field (a field a `message_delta`
leaves out is unknown, not 0) and normalizes the merged raw usage each time: Anthropic's raw
`input_tokens` excludes cache reads and writes, the normalized one includes them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic._base_client import AsyncAPIClient, SyncAPIClient
from anthropic._response import APIResponse, AsyncAPIResponse

from tokenspy_core import MergedCall, start_call, usage_from_anthropic
from tokenspy_core.usage import field_of as _get
from tokenspy_core.usage import provider_usage

from ._observe import copy_observed
from ._sdk_patch import Patches
from ._sdk_request import Plan, SdkTypes, copy_options, host_provider, wrap_request, wrap_retry_sleep
from ._sdk_stream import CallLike

__all__ = ["install", "uninstall"]

# The raw usage fields a stream event may report (cumulative values: the latest wins), output_tokens
# aside (message_start's is a placeholder).
_RAW_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation",
              "output_tokens_details")

_patches = Patches()


def install() -> None:
    types = SdkTypes(streams=(anthropic.Stream,), async_streams=(anthropic.AsyncStream,),
                     raw=(APIResponse,), async_raw=(AsyncAPIResponse,))
    _patches.wrap(SyncAPIClient, "request", wrap_request(_plan, types, is_async=False))
    _patches.wrap(AsyncAPIClient, "request", wrap_request(_plan, types, is_async=True))
    _patches.wrap(SyncAPIClient, "_sleep_for_retry", wrap_retry_sleep(is_async=False))
    _patches.wrap(AsyncAPIClient, "_sleep_for_retry", wrap_retry_sleep(is_async=True))
    for cls in (anthropic.Anthropic, anthropic.AsyncAnthropic):
        for name in ("copy", "with_options"):
            _patches.wrap(cls, name, copy_observed)


def uninstall() -> None:
    _patches.undo()


def keep_copies_observed(cls: type) -> None:
    """An observed client's class whose `copy`/`with_options` the install did not patch: its copies are
    observed too."""
    _patches.wrap_defined(cls, ("copy", "with_options"), copy_observed)


_NO_BODY: Mapping[str, Any] = {}  # shared, never mutated


def _mapping(value: Any) -> Mapping[str, Any]:
    # The ABC check (slow even when negative) only for what is neither a dict nor None.
    if type(value) is dict or (value is not None and isinstance(value, Mapping)):
        return value  # type: ignore[no-any-return]
    return _NO_BODY


def _plan(client: Any, options: Any, stream: bool, tags: Mapping[str, Any]) -> Plan | None:
    path = getattr(options, "url", None)
    # `beta.messages` adds `?beta=true`; `/v1/messages/count_tokens` is free and not a model call.
    if not isinstance(path, str) or (path != "/v1/messages" and path.partition("?")[0] != "/v1/messages"):
        return None
    if options.method.lower() != "post":
        return None
    body = options.json_data
    if type(body) is not dict:
        body = _mapping(body)
    extra = options.extra_json
    model = (extra is not None and _mapping(extra).get("model")) or body.get("model")
    given = body.get("messages")
    messages = list(given or ())  # a copy: the caller may append to their list before an estimate reads it
    if given is not None and type(given) is not list and type(given) is not tuple:
        # Any iterable is accepted and read only as the request is serialized: a generator, read
        # here, would go out empty. The list read from it is sent instead (on a copy of the options).
        options = copy_options(options, "json_data", {**body, "messages": messages})
    system = body.get("system")
    provider = host_provider(client, "anthropic")  # another host's Anthropic-compatible API is its own
    call = start_call(None, None if model is None else str(model), provider=provider,
                      prompt=[{"role": "system", "content": system}, *messages] if system else messages,
                      streamed=stream, merge=True, operation="chat", tags=tags or None, tools=body.get("tools"))
    if provider != "anthropic" and type(call) is MergedCall:
        call.set_provider(provider)  # (see the openai adapter)
    return _Messages(call, options, stream)


# Content blocks in which the model calls a tool: a name, then its input streamed as `input_json_delta`.
_TOOL_USE = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def _text_of(body: Any) -> str:
    """The generated text (and tool calls), for estimating output tokens when usage is missing: the
    same text a stream of this message delivers (a tool call's name, then its input as JSON)."""
    parts = []
    for block in _get(body, "content") or ():
        kind = _get(block, "type")
        if kind == "text":
            parts.append(str(_get(block, "text") or ""))
        elif kind == "thinking":
            parts.append(str(_get(block, "thinking") or ""))
        elif kind in _TOOL_USE:
            parts.append(str(_get(block, "name") or ""))
            parts.append(_input_json(_get(block, "input")))
    return "".join(parts)


def _input_json(value: Any) -> str:
    # Streamed, a tool's input arrives as JSON with the default separators (`{"city": "Paris"}`): the
    # same text here, so a message is estimated alike, streamed or not.
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


# content_block_delta types -> the attribute holding their generated text
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


class _Messages(Plan):
    """A Messages request: its `Message`, or its raw stream events (`create(stream=True)`, and
    underneath `messages.stream()`)."""

    __slots__ = ("_pending", "_raw")
    # message_delta carries the stop reason and the final usage (the SDK's own tracing calls a stream that
    # ends before it an error).
    ends_with_final_event = True

    def __init__(self, call: CallLike, options: Any, streamed: bool) -> None:
        super().__init__(call, options, streamed)
        self._pending: Any = None  # message_start's usage, not yet accounted (see on_item)
        self._raw: dict[str, Any] | None = None  # the latest value of each raw usage field (streams)

    def on_body(self, body: Any) -> None:
        """A `Message` or its JSON dict."""
        call = self.call
        usage = _get(body, "usage")
        if usage is not None:
            call.add_report(provider_usage(usage_from_anthropic, usage))
            call.set_speed(_get(usage, "speed"))  # fast mode is priced at its own rates
        call.set_model(_get(body, "model"))
        call.set_response_text(functools.partial(_text_of, body))

    def on_item(self, event: Any) -> bool:
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            delta_kind = delta.type
            if delta_kind == "text_delta":  # nearly every event of a stream
                text = delta.text
            else:
                attr = _DELTA_TEXT.get(delta_kind)
                text = getattr(delta, attr, None) if attr is not None else None
            if text:
                self._text(text)
            else:
                self.call.mark_first_token()
            return False
        if self._pending is not None:
            self.settle()
        if kind == "message_delta":
            self._merge(event.usage, skip_output=False)
            # The last message_delta carries the stop reason and the final usage: the answer is
            # whole even if the consumer stops before the empty message_stop.
            if getattr(event.delta, "stop_reason", None) is not None:
                self.complete = True
        elif kind == "message_start":
            message = event.message
            self.call.mark_answered()
            self.call.set_model(message.model)
            # message_start is the event the consumer waits for (its time to first token): its
            # usage is accounted once the consumer has it, with the next event or at the end.
            self._pending = message.usage
        elif kind == "content_block_start":
            # A tool call's name comes only here, before its input's deltas: generated output.
            block = event.content_block
            if getattr(block, "type", None) in _TOOL_USE:
                self.call.add_text(getattr(block, "name", None) or "")
        elif kind == "message_stop":
            self.complete = True
        return False

    def first_output(self, event: Any) -> bool:
        # As `on_item` marks the first token: at any content_block_delta, and at a tool call's start.
        kind = _get(event, "type")
        return kind == "content_block_delta" or (
            kind == "content_block_start" and _get(_get(event, "content_block"), "type") in _TOOL_USE)

    def settle(self) -> None:
        usage = self._pending
        if usage is not None:
            self._pending = None
            # message_start's output_tokens is a placeholder: until a message_delta reports the
            # real count, the output is estimated from the text actually received.
            self._merge(usage, skip_output=True)

    def _merge(self, usage: Any, *, skip_output: bool) -> None:
        if usage is None:
            return
        raw = self._raw
        if raw is None:
            raw = self._raw = {}
        for name in _RAW_USAGE:
            value = getattr(usage, name, None)
            if value is not None:
                raw[name] = value
        if not skip_output:
            value = getattr(usage, "output_tokens", None)
            if value is not None:
                raw["output_tokens"] = value
        self.call.add_report(provider_usage(usage_from_anthropic, raw))
        self.call.set_speed(getattr(usage, "speed", None))
