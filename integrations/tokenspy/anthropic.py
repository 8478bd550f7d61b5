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
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic._base_client import AsyncAPIClient, SyncAPIClient
from anthropic._response import APIResponse, AsyncAPIResponse

from tokenspy_core import start_call, usage_from_anthropic
from tokenspy_core.usage import field_of as _get

from ._observe import copy_observed, tracking
from ._sdk_patch import Patches
from ._sdk_request import Plan, SdkTypes, wrap_request
from ._sdk_stream import CallLike, StreamTracker

__all__ = ["install", "uninstall"]

# The raw usage fields a stream event may report (cumulative values: the latest wins).
_RAW_USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
              "cache_creation", "output_tokens_details")

_patches = Patches()


def install() -> None:
    types = SdkTypes(streams=(anthropic.Stream,), async_streams=(anthropic.AsyncStream,),
                     raw=(APIResponse,), async_raw=(AsyncAPIResponse,))
    _patches.wrap(SyncAPIClient, "request", wrap_request(_plan, types, is_async=False))
    _patches.wrap(AsyncAPIClient, "request", wrap_request(_plan, types, is_async=True))
    for cls in (anthropic.Anthropic, anthropic.AsyncAnthropic):
        for name in ("copy", "with_options"):
            _patches.wrap(cls, name, copy_observed)


def uninstall() -> None:
    _patches.undo()




def _plan(client: Any, options: Any, stream: bool) -> Plan | None:
    path = getattr(options, "url", None)
    # `beta.messages` adds `?beta=true`; `/v1/messages/count_tokens` is free and not a model call.
    if not isinstance(path, str) or path.partition("?")[0] != "/v1/messages":
        return None
    if options.method.lower() != "post":
        return None
    tags = tracking(client)
    if tags is None:
        return None
    body: Mapping[str, Any] = options.json_data if isinstance(options.json_data, Mapping) else {}
    extra: Mapping[str, Any] = options.extra_json if isinstance(options.extra_json, Mapping) else {}
    model = extra.get("model") or body.get("model")
    messages = list(body.get("messages") or ())
    system = body.get("system")
    call = start_call(None, None if model is None else str(model), provider="anthropic",
                      prompt=[{"role": "system", "content": system}, *messages] if system else messages,
                      streamed=stream, merge=True, operation="chat", tags=tags or None)
    return Plan(call, options, stream, _MessageEvents, _on_body)


def _on_body(call: CallLike, body: Any) -> None:
    """A `Message` or its JSON dict."""
    usage = _get(body, "usage")
    if usage is not None:
        call.set_usage(usage_from_anthropic(usage))
    call.set_model(_get(body, "model"))
    call.set_response_text(functools.partial(_text_of, body))


def _text_of(body: Any) -> str:
    parts = []
    for block in _get(body, "content") or ():
        kind = _get(block, "type")
        if kind == "text":
            parts.append(str(_get(block, "text") or ""))
        elif kind == "thinking":
            parts.append(str(_get(block, "thinking") or ""))
        elif kind == "tool_use":
            parts.append(f"{_get(block, 'name') or ''}{_get(block, 'input') or ''}")
    return "".join(parts)


# content_block_delta types -> the attribute holding their generated text
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


class _MessageEvents(StreamTracker):
    """Raw Messages stream events (`create(stream=True)`, and underneath `messages.stream()`)."""

    __slots__ = ("_raw",)

    def __init__(self, call: CallLike) -> None:
        super().__init__(call)
        self._raw: dict[str, Any] = {}

    def on_item(self, event: Any) -> bool:
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            attr = _DELTA_TEXT.get(delta.type)
            text = getattr(delta, attr, None) if attr is not None else None
            if text:
                self.call.add_text(text)
            else:
                self.call.mark_first_token()
        elif kind == "message_delta":
            self._merge(event.usage, skip_output=False)
        elif kind == "message_start":
            self.call.set_model(event.message.model)
            # message_start's output_tokens is a placeholder: until a message_delta reports the
            # real count, the output is estimated from the text actually received.
            self._merge(event.message.usage, skip_output=True)
        elif kind == "message_stop":
            self.complete = True
        return False

    def _merge(self, usage: Any, *, skip_output: bool) -> None:
        if usage is None:
            return
        raw = self._raw
        for name in _RAW_USAGE:
            value = getattr(usage, name, None)
            if value is not None and not (skip_output and name == "output_tokens"):
                raw[name] = value
        self.call.set_usage(usage_from_anthropic(raw))
