"""The openai SDK adapter: Chat Completions, Responses, Embeddings and legacy Completions.

Installed by `tokenspy.observe(client)` or automatically under `profile`/`session` (see `_observe`);
`install()` / `uninstall()` patch and unpatch `SyncAPIClient.request` / `AsyncAPIClient.request`, which
every openai call goes through (see `_sdk_request`). This module imports openai: import it only once
openai is imported.

Streams: Chat Completions report usage only when asked (`stream_options.include_usage`), in one extra
final chunk whose `choices` is empty. When the caller did not decide, tokenspy asks, on a copy of the
request options, and hides that chunk from the caller, whose loop typically reads `chunk.choices[0]`.
A caller's explicit `include_usage` (True or False) is never changed, and its chunk never hidden. A
request whose body the caller may read as bytes (`with_raw_response`, `with_streaming_response`) is
never asked: bytes cannot hide a chunk.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import unquote

import openai
from openai._base_client import AsyncAPIClient, SyncAPIClient
from openai._legacy_response import LegacyAPIResponse
from openai._response import APIResponse, AsyncAPIResponse
from openai.lib.azure import AsyncAzureOpenAI, AzureOpenAI, BaseAzureClient

from tokenspy_core import Call, MergedCall, start_call, usage_from_openai
from tokenspy_core.usage import field_of as _get
from tokenspy_core.usage import provider_usage

from ._observe import copy_observed
from ._sdk_patch import Patches
from ._sdk_request import (
    RAW_RESPONSE_HEADER,
    Plan,
    SdkTypes,
    copy_options,
    host_provider,
    wrap_request,
    wrap_retry_sleep,
)
from ._sdk_stream import CallLike

__all__ = ["install", "uninstall"]

# request path -> operation name (OpenTelemetry GenAI names)
_ENDPOINTS = {
    "/chat/completions": "chat",
    "/responses": "chat",
    "/responses/compact": "chat",  # a model call over the conversation, billed like one
    "/embeddings": "embeddings",
    "/completions": "text_completion",
}
_RESPONSES = ("/responses", "/responses/compact")
# Azure rejects `stream_options` before this API version.
_AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"

_patches = Patches()


def install() -> None:
    types = SdkTypes(streams=(openai.Stream,), async_streams=(openai.AsyncStream,),
                     raw=(LegacyAPIResponse, APIResponse), async_raw=(AsyncAPIResponse,))
    _patches.wrap(SyncAPIClient, "request", wrap_request(_plan, types, is_async=False))
    _patches.wrap(AsyncAPIClient, "request", wrap_request(_plan, types, is_async=True))
    _patches.wrap(SyncAPIClient, "_sleep_for_retry", wrap_retry_sleep(is_async=False))
    _patches.wrap(AsyncAPIClient, "_sleep_for_retry", wrap_retry_sleep(is_async=True))
    for cls in (openai.OpenAI, openai.AsyncOpenAI, AzureOpenAI, AsyncAzureOpenAI):
        for name in ("copy", "with_options"):
            _patches.wrap(cls, name, copy_observed)


def uninstall() -> None:
    _patches.undo()


def keep_copies_observed(cls: type) -> None:
    """An observed client's class whose `copy`/`with_options` the install did not patch: its copies are
    observed too."""
    _patches.wrap_defined(cls, ("copy", "with_options"), copy_observed)


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # The ABC check (slow even when negative) only for what is neither a dict nor None.
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


_NO_BODY: Mapping[str, Any] = {}  # shared, never mutated


# -- per request ---------------------------------------------------------------------------------
def _plan(client: Any, options: Any, stream: bool, tags: Mapping[str, Any]) -> Plan | None:
    path = getattr(options, "url", None)
    if not isinstance(path, str):
        return None
    if "?" in path:  # `client.beta.responses` puts `?beta=true` in the path
        path = path.partition("?")[0]
    operation = _ENDPOINTS.get(path)
    if operation is None:
        # `_background` is empty unless a background response is pending: one truth test otherwise.
        return _poll_plan(path, options, stream) if _background and path.startswith(_RESPONSE_PREFIX) else None
    method = options.method
    if method != "post" and method.lower() != "post":  # the SDK's methods are lower case: no copy then
        return None
    body: Mapping[str, Any] = options.json_data
    if type(body) is not dict and not _is_mapping(body):
        body = _NO_BODY
    extra: Mapping[str, Any] | None = options.extra_json
    if extra is not None and not _is_mapping(extra):
        extra = None
    model = (extra is not None and extra.get("model")) or body.get("model")
    chat = path == "/chat/completions"
    hide = expect = False
    choices = 1
    if stream and path not in _RESPONSES:  # Chat Completions or legacy Completions (embeddings never stream)
        # The caller's own `include_usage`, inline (the common case of a caller who decided).
        holder = extra if extra is not None and "stream_options" in extra else body
        current = holder.get("stream_options")
        given = current.get("include_usage") if type(current) is dict else None
        if given is not None:
            expect = bool(given)
        elif not _read_raw_maybe(options):
            options, hide, expect = _ask_stream_usage(client, options, holder, extra)
        if not expect:  # the answer is complete when every choice has finished
            choices = _choice_count(extra if extra is not None and "n" in extra else body)
    provider = _provider(client)
    call = start_call(None, None if model is None else str(model), provider=provider,
                      prompt=body.get("messages") if chat else _prompt(path, body), streamed=stream, merge=True,
                      operation=operation, tags=tags or None, tools=body.get("tools") or body.get("functions"))
    if provider != "openai" and type(call) is MergedCall:
        # A framework model over this client names its own provider ("openai" for ChatOpenAI, whatever its
        # base_url): the host this client's URL names is the one that served and prices the call.
        call.set_provider(provider)
    if chat:
        return _ChatChunks(call, options, stream, hide, expect, choices)
    if path in _RESPONSES:
        # `extra_body` is merged over the body when the request is built: its `background` is the one sent.
        background = extra["background"] if extra is not None and "background" in extra else body.get("background")
        if background and type(call) is Call:
            return _BackgroundStream(call, options, stream) if stream else _BackgroundCreate(call, options, stream)
        return _ResponsesEvents(call, options, stream)
    return _CompletionChunks(call, options, stream, hide, expect, choices)


def _provider(client: Any) -> str:
    """Who serves the client's requests: `"azure"` for an Azure client, else the provider its base URL
    names (`"groq"`, `"openrouter"`, ...: a host's price, not OpenAI's, for a model both list), else
    `"openai"` (api.openai.com, and a host no price source knows: a local server, a proxy)."""
    return "azure" if isinstance(client, BaseAzureClient) else host_provider(client, "openai")


def _choice_count(body: Mapping[str, Any]) -> int:
    """How many choices a stream answers with (`n`): each ends with its own `finish_reason`."""
    n = body.get("n")
    return n if type(n) is int and n > 1 else 1


def _prompt(path: str, body: Mapping[str, Any]) -> Any:
    """What to estimate input tokens from, should the provider not report them."""
    if path == "/chat/completions":
        return body.get("messages")
    if path in _RESPONSES:
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or ())
        instructions = body.get("instructions")
        return [{"role": "system", "content": instructions}, *items] if instructions else items
    return body.get("input") if path == "/embeddings" else body.get("prompt")


def _ask_stream_usage(client: Any, options: Any, holder: Mapping[str, Any],
                      extra: Mapping[str, Any] | None) -> tuple[Any, bool, bool]:
    """(options to send, hide the usage chunk, a usage chunk will come); `holder` is the body or the
    `extra_body` whose `stream_options` is sent (`extra_body` is merged over the body when the request is
    built)."""
    current = holder.get("stream_options")
    if _is_mapping(current) and current.get("include_usage") is not None:
        return options, False, bool(current["include_usage"])
    if not _accepts_stream_options(client):
        return options, False, False
    asked = {**current, "include_usage": True} if _is_mapping(current) else {"include_usage": True}
    # A copy: never touch the caller's options or dicts.
    field = "extra_json" if holder is extra else "json_data"
    return copy_options(options, field, {**holder, "stream_options": asked}), True, True


_RAW_HEADER_LOWER = RAW_RESPONSE_HEADER.lower()


def _read_raw_maybe(options: Any) -> bool:
    """Whether the caller may read this request's body as bytes: `with_raw_response` and
    `with_streaming_response` mark their requests with the SDK's raw-response header. Such a stream is
    not asked for usage: the extra chunk cannot be hidden from bytes (a relay's
    `json.loads(line[6:])["choices"][0]` fails on it), and the caller did not choose to have it."""
    headers = options.headers
    if not _is_mapping(headers) or not headers:
        return False
    return RAW_RESPONSE_HEADER in headers or any(
        isinstance(name, str) and name.lower() == _RAW_HEADER_LOWER for name in headers)


def _accepts_stream_options(client: Any) -> bool:
    if not isinstance(client, BaseAzureClient):
        return True
    version = getattr(client, "_api_version", None)
    return not isinstance(version, str) or version[:10] >= _AZURE_STREAM_OPTIONS_SINCE


# -- non-streamed responses ----------------------------------------------------------------------
class _Request(Plan):
    """Any tracked openai request; subclasses read its stream, if it is one."""

    __slots__ = ()

    def on_body(self, body: Any) -> None:
        """A ChatCompletion, Response, CreateEmbeddingResponse or Completion, or its JSON dict."""
        _account_body(self.call, body)


def _account_body(call: CallLike, body: Any) -> None:
    usage = _get(body, "usage")
    if usage is not None:
        call.add_report(provider_usage(usage_from_openai, usage))
    call.set_model(_get(body, "model"))
    call.set_service_tier(_get(body, "service_tier"))
    if _get(body, "status") == "failed":  # a Responses API response
        call.fail(_response_error(body))
        return
    call.set_response_text(functools.partial(_text_of, body))


def _response_error(response: Any) -> str:
    error = _get(response, "error")
    return f"{_get(error, 'code') or 'error'}: {_get(error, 'message') or 'response failed'}"


def _text_of(body: Any) -> str:
    """The generated text (and tool calls), for estimating output tokens when usage is missing."""
    parts: list[str] = []
    for choice in _get(body, "choices") or ():
        message = _get(choice, "message")
        # What a stream of it would send, in the same order (see `_ChatChunks.on_item`).
        parts.append(_reasoning_text(message) or "")
        parts.append(str(_get(message, "content") or _get(choice, "text") or ""))
        parts.append(str(_get(message, "refusal") or ""))
        parts.append(str(_get(_get(message, "audio"), "transcript") or ""))
        calls = [_get(tool_call, "function") for tool_call in _get(message, "tool_calls") or ()]
        for function in (*calls, _get(message, "function_call")):
            parts.append(f"{_get(function, 'name') or ''}{_get(function, 'arguments') or ''}")
    for item in _get(body, "output") or ():
        for part in _get(item, "summary") or ():  # a reasoning item's summary
            parts.append(str(_get(part, "text") or ""))
        for part in _get(item, "content") or ():
            parts.append(str(_get(part, "text") or ""))
        kind = _get(item, "type")
        if kind in _TOOL_CALL_ITEMS:  # its name, then its arguments, as a stream sends them
            parts.append(str(_get(item, "name") or ""))
        parts.append(str(_get(item, _GENERATED_FIELD.get(kind, "arguments")) or ""))
    return "".join(parts)


# -- streams (per chunk: O(1) attribute reads and the text appender, see `Plan._text`) ----------------
class _ChatChunks(_Request):
    """Chat Completions chunks: text (and tool-call) deltas, then usage in the final chunk if asked."""

    __slots__ = ("_expect_usage", "_hide_usage", "_model_seen", "_unfinished")

    def __init__(self, call: CallLike, options: Any, streamed: bool, hide_usage: bool,
                 expect_usage: bool, choices: int = 1) -> None:
        super().__init__(call, options, streamed)
        self._hide_usage = hide_usage
        self._expect_usage = expect_usage
        self._model_seen = False
        self._unfinished = choices  # choices without a finish_reason yet (counted without a usage chunk)

    def on_item(self, chunk: Any) -> bool:
        # Once per chunk: most chunks are one choice with a text delta, read with nothing else.
        if not self._model_seen and chunk.model:
            self._model_seen = True
            call = self.call
            call.mark_answered()  # the answer began: should the stream fail now, its prompt was billed
            call.set_model(chunk.model)
            call.set_service_tier(getattr(chunk, "service_tier", None))
        choices = chunk.choices
        for choice in choices or ():  # (a gateway's usage chunk may say `"choices": null`)
            delta = choice.delta
            if delta is not None:
                content = delta.content
                if content:
                    self._text(content)
                elif delta.tool_calls:
                    self.call.mark_first_token()
                    for tool_call in delta.tool_calls:
                        function = tool_call.function
                        if function is not None:
                            self.call.add_text((function.name or "") + (function.arguments or ""))
                elif delta.refusal:
                    self.call.add_text(delta.refusal)
                elif delta.function_call is not None:  # legacy `functions=`: the name, then the arguments
                    function = delta.function_call
                    self.call.add_text((function.name or "") + (function.arguments or ""))
                else:
                    extra = getattr(delta, "__pydantic_extra__", None)  # (pydantic 1 has none)
                    if extra:  # the role and finish chunks have none: the SDK declares their fields
                        self._undeclared_output(extra)
            if not self._expect_usage and choice.finish_reason is not None:
                # No usage chunk will follow: the answer is complete once every choice (`n`) finished.
                self._unfinished -= 1
                if self._unfinished <= 0:
                    self.complete = True
        usage = chunk.usage
        if usage is None:
            return False
        self.call.add_report(provider_usage(usage_from_openai, usage))
        # The answer is whole with the usage-only chunk that ends it, not with the running totals some
        # servers put on every chunk (vLLM's continuous usage stats, Z.ai): stopped there, it is cut.
        if not choices or all(choice.finish_reason is not None for choice in choices):
            self.complete = True
        return self._hide_usage and not choices

    def _undeclared_output(self, extra: Mapping[str, Any]) -> None:
        """Output in delta fields the SDK does not declare (kept as the model's extras): reasoning streamed
        as text, an audio answer's transcript."""
        reasoning = _reasoning_text(extra)
        if reasoning:
            self._text(reasoning)
            return
        audio = extra.get("audio")
        if audio:
            transcript = _get(audio, "transcript")
            if isinstance(transcript, str) and transcript:
                self.call.add_text(transcript)
            elif _get(audio, "data"):  # audio before its transcript: output, with no text to count
                self.call.mark_first_token()

    def first_output(self, chunk: Any) -> bool:
        for choice in _get(chunk, "choices") or ():
            delta = _get(choice, "delta")
            if (_get(delta, "content") or _get(delta, "tool_calls") or _get(delta, "refusal")
                    or _get(delta, "function_call") or _reasoning_text(delta)):
                return True
            audio = _get(delta, "audio")
            if _get(audio, "transcript") or _get(audio, "data"):
                return True
        return False


def _reasoning_text(delta: Any) -> str | None:
    """Reasoning an OpenAI-compatible provider streams as text beside the answer: DeepSeek's
    `reasoning_content`, `reasoning` on vLLM, OpenRouter and Groq. One of them only: a server moving from
    the first name to the second may send both, with the same text."""
    text = _get(delta, "reasoning_content") or _get(delta, "reasoning")
    return text if isinstance(text, str) else None


class _CompletionChunks(_Request):
    """Legacy Completions chunks (`choices[i].text`); embeddings, which never stream, use it too."""

    __slots__ = ("_expect_usage", "_hide_usage", "_unfinished")

    def __init__(self, call: CallLike, options: Any, streamed: bool, hide_usage: bool,
                 expect_usage: bool, choices: int = 1) -> None:
        super().__init__(call, options, streamed)
        self._hide_usage = hide_usage
        self._expect_usage = expect_usage
        self._unfinished = choices

    def on_item(self, chunk: Any) -> bool:
        call = self.call
        choices = getattr(chunk, "choices", None) or ()
        for choice in choices:
            text = choice.text
            if text:
                self._text(text)
            if choice.finish_reason is not None and not self._expect_usage:
                self._unfinished -= 1
                if self._unfinished <= 0:
                    self.complete = True
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return False
        call.set_model(chunk.model)
        call.add_report(provider_usage(usage_from_openai, usage))
        if not choices or all(choice.finish_reason is not None for choice in choices):  # (see _ChatChunks)
            self.complete = True
        return self._hide_usage and not choices

    def first_output(self, chunk: Any) -> bool:
        return any(_get(choice, "text") for choice in _get(chunk, "choices") or ())


# Responses API events whose `delta` is generated text (output tokens, should they be estimated).
# A hosted tool's input the model writes (code for the code interpreter, an MCP tool's arguments) is output.
_TEXT_DELTAS = frozenset({
    "response.output_text.delta", "response.function_call_arguments.delta", "response.refusal.delta",
    "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
    "response.custom_tool_call_input.delta", "response.code_interpreter_call_code.delta",
    "response.mcp_call_arguments.delta",
})
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Output items in which the model calls a tool: named in `response.output_item.added`, their arguments
# (a custom tool's input) streamed as deltas after it.
_TOOL_CALL_ITEMS = frozenset({"function_call", "custom_tool_call", "mcp_call"})
# Where an output item of a whole response holds the text a stream sends as its deltas (else `arguments`).
_GENERATED_FIELD = {"custom_tool_call": "input", "code_interpreter_call": "code"}


class _ResponsesEvents(_Request):
    __slots__ = ()
    ends_with_final_event = True  # response.completed / .incomplete / .failed (an `error` event fails it)

    def on_item(self, event: Any) -> bool:
        kind = event.type
        if kind in _TEXT_DELTAS:
            delta = event.delta
            if delta:
                self._text(delta)
            else:
                self.call.mark_first_token()
        elif kind == "response.output_item.added":
            item = event.item
            if getattr(item, "type", None) in _TOOL_CALL_ITEMS:  # the name is generated output, sent only here
                self.call.add_text(getattr(item, "name", None) or "")
        elif kind in _FINAL or kind == "response.created":
            response = event.response
            self.call.mark_answered()
            self.call.set_model(response.model)
            self.call.set_service_tier(getattr(response, "service_tier", None))
            if response.usage is not None:
                self.call.add_report(provider_usage(usage_from_openai, response.usage))
            if kind == "response.failed":
                self.call.fail(_response_error(response))
            elif kind != "response.created":
                self.complete = True
        elif kind == "error":
            # The SDK does not raise on an error event: the loop just ends after it.
            self.call.fail(f"{event.code or 'error'}: {event.message}")
        return False

    def first_output(self, event: Any) -> bool:
        kind = _get(event, "type")
        return kind in _TEXT_DELTAS or (
            kind == "response.output_item.added" and _get(_get(event, "item"), "type") in _TOOL_CALL_ITEMS)


# -- background responses -------------------------------------------------------------------------
# `responses.create(background=True)` answers at once with a queued response and no usage; the model
# runs later, and its usage comes with the response `responses.retrieve(id)` (or `cancel(id)`) returns
# once it is terminal. The call stays open in between: recorded once, at that terminal response, with
# its usage, in the span it was created in. So does a `background=True` stream that stops before its
# final event (a dropped connection, a `break`): the response runs on, and is billed whole.
_RESPONSE_PREFIX = "/responses/"
_NOT_STARTED = frozenset({"queued", "in_progress"})
_TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
MAX_PENDING = 1024  # background responses awaiting a terminal retrieve; beyond, the oldest is given up
_background: dict[str, Call] = {}  # response id -> its open call, oldest first
_background_lock = threading.Lock()


def _pend(response_id: str, call: Call) -> None:
    with _background_lock:
        _background[response_id] = call
        given_up = [_background.pop(next(iter(_background))) for _ in range(len(_background) - MAX_PENDING)]
    for old in given_up:
        old.abort()  # its usage will not be seen: estimated, as any call that ended without it


def _poll_plan(path: str, options: Any, stream: bool) -> Plan | None:
    """A retrieve (or cancel) of a pending background response; None for any other request."""
    rest = path[len(_RESPONSE_PREFIX):]
    if rest.endswith("/cancel"):
        rest = rest[:-len("/cancel")]
    elif options.method.lower() != "get":
        return None
    response_id = unquote(rest)
    call = _background.get(response_id)
    if call is None:
        return None
    poll = _BackgroundPollEvents if stream else _BackgroundPoll
    return poll(_Detached(call), options, stream, response_id)


class _Detached(MergedCall):
    """What the requests around a pending background response end in place of its call: nothing. Their
    own ends (a create's stream stopped early, a retrieve that fails, is cancelled, or finds the response
    still running) are not the response's, which runs on at the provider."""

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._targets = ()  # forwards nothing: the poll plans feed the call itself

    def abort(self) -> None:
        self._end("aborted")

    def fail(self, error: BaseException | str | None = None) -> None:
        self._end("failed")


class _BackgroundCreate(_ResponsesEvents):
    """`responses.create(background=True)`: a response that has not run yet leaves its call open."""

    __slots__ = ()

    def on_body(self, body: Any) -> None:
        response_id = _get(body, "id")
        call = self.call
        if _get(body, "status") not in _NOT_STARTED or not isinstance(response_id, str) or type(call) is not Call:
            _account_body(call, body)  # already terminal (or not a response): as any other
            return
        call.set_model(_get(body, "model"))
        # What this request ends (`finish`, or `fail` should reading it fail) is a stand-in from now on:
        # the call itself ends at the terminal retrieve.
        self.call = _Detached(call)
        _pend(response_id, call)


class _BackgroundStream(_ResponsesEvents):
    """`responses.create(background=True, stream=True)`: read as any Responses stream; one that stops
    before its final event (cut, broken out of, closed, collected, or ended short) leaves its call open
    under the id its first event gave, for a retrieve (streamed or not) or a cancel to end."""

    __slots__ = ("_id",)

    def __init__(self, call: CallLike, options: Any, streamed: bool) -> None:
        super().__init__(call, options, streamed)
        self._id: str | None = None

    def on_item(self, event: Any) -> bool:
        if self._id is None and event.type in _OPENING:
            response_id = event.response.id
            self._id = response_id if isinstance(response_id, str) else None
        return super().on_item(event)

    def _set_aside(self) -> bool:
        """Whether the call was left for a retrieve, rather than ended with this stream."""
        call = self.call
        response_id = self._id
        if self.complete or response_id is None or type(call) is not Call or call.status != "active":
            return False
        self.call = _Detached(call)
        self.call.finish()  # this request is over; the response is not
        _pend(response_id, call)
        return True

    def stopped(self) -> None:
        if not self._set_aside():
            super().stopped()

    def errored(self, exc: BaseException) -> None:
        if not self._set_aside():
            super().errored(exc)


# The first events of a Responses stream, each with the response (and its id).
_OPENING = frozenset({"response.created", "response.queued"})


class _BackgroundPoll(Plan):
    """A retrieve of a pending background response: ends its call once the response is terminal. The
    request's own ends go to a stand-in: a retrieve that fails, or finds the response still running,
    ends nothing."""

    __slots__ = ("_id",)

    def __init__(self, call: MergedCall, options: Any, streamed: bool, response_id: str) -> None:
        super().__init__(call, options, streamed)
        self._id = response_id

    def on_body(self, body: Any) -> None:
        status = _get(body, "status")
        if status not in _TERMINAL:
            return
        with _background_lock:  # `_pend` may be walking the dict for the oldest entry
            call = _background.pop(self._id, None)
        if call is None:  # another retrieve (in another thread) took it
            return
        _account_body(call, body)
        if status == "cancelled":
            call.abort()
        else:
            call.finish()


class _BackgroundPollEvents(_BackgroundPoll):
    """A streamed retrieve (`retrieve(id, stream=True, starting_after=n)`, how a background stream is
    resumed): its final event holds the terminal response. Its text is not counted: a retrieve may replay
    what the create's stream already showed."""

    __slots__ = ()

    def on_item(self, event: Any) -> bool:
        if event.type in _FINAL:
            self.on_body(event.response)
        return False
