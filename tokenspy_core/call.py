"""One provider call's lifecycle: the reconciliation state machine every adapter feeds.

    start ──add_text / mark_first_token / set_usage / set_model──▶ finished | aborted | failed

- Provider-reported numbers win field by field; reports merge "latest value wins" because
  providers repeat cumulative totals (Anthropic's message_start then message_delta).
- A field the provider never reported is estimated with tiktoken at the end, from the prompt and
  the streamed text (joined and tokenized once, never per chunk), and the record says so.
- The first end wins; later ones are no-ops. A call garbage-collected while active ends aborted.
- Layer dedupe: a framework adapter `activate()`s its call; an SDK adapter running inside asks
  `start_call(..., merge=True)` and gets a view that merges its exact usage into the outer call
  instead of a second record.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from weakref import WeakKeyDictionary, WeakSet

from ._guard import _passthrough, log_internal_error
from .errors import error_text, redact_keys
from .pricing import FEMTO_PER_USD, ModelRates, usd
from .spans import Sink, Span, past_ended_sessions
from .spans import _current as _current_span
from .tokenizer import count_prompt_tokens, count_tokens, count_tool_tokens, plain_prompt, tokenizer_model
from .usage import (
    TOKEN_BITS,
    Usage,
    UsageReport,
    UsageTypeError,
    UsageValueError,
    checked_copy,
    drop_impossible_parts,
    dropping_invalid_counts,
    impossible_parts,
    input_excludes_cache,
    is_bedrock_usage,
    rebase_excluded_cache,
    usage_from_any,
    user_count,
)

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["Call", "CallRecord", "MergedCall", "active_call", "config"]

Status = Literal["active", "finished", "aborted", "failed"]
UsageSource = Literal["provider", "estimated", "mixed"]

_ids = itertools.count(1)
# In a process forked from another, the calls it inherited (ids below this): copies of calls the parent
# ends and records, whose ends here (at exit, a stream closed or collected) record nothing (`_end`).
inherited_below = 0


def _after_fork_in_child() -> None:
    global inherited_below
    inherited_below = next(_ids)


os.register_at_fork(after_in_child=_after_fork_in_child)
# Re-entrant: a call garbage-collected (ending itself in __del__) may fire while a lock is held.
_end_lock = threading.RLock()
_active: ContextVar[Call | None] = ContextVar("tokenspy_active_call", default=None)
# What a call that got no usage report reads (never mutated).
_NO_REPORT = UsageReport()
# Called with every new Call at the end of its __init__, in the context that started it (the
# OpenTelemetry exporter keeps the OTel context there). Empty: one truthiness test per call.
call_listeners: list[Callable[[Call], None]] = []
# Providers whose reported input excludes cache reads and writes: a plain dict of theirs, given in pieces,
# is merged as their own shapes are (`usage.rebase_excluded_cache`).
_CACHE_EXCLUSIVE_INPUT = frozenset({"anthropic", "bedrock", "aws.bedrock", "aws_bedrock"})
# Calls made `activate(alongside=...)`: second records of one provider call (see `Call.activate`).
_echoes: WeakSet[Call] = WeakSet()
# Calls an inner framework model call merged into (see `Call.adopt_inner`).
_adopted: WeakSet[Call] = WeakSet()
# Whether either set was ever used: a bool test per call where a WeakSet's own (Python) truth test costs
# more than the check it guards.
any_echo = False
any_adopted = False


@dataclass(slots=True)
class _Config:
    capture_content: bool = False
    tags: dict[str, Any] = field(default_factory=dict)


config = _Config()


class _CurrentSpan:
    def __repr__(self) -> str:
        return "<current span>"


CURRENT: Any = _CurrentSpan()


@dataclass(slots=True)
class CallRecord:
    """A finished call, as reported by `tokenspy.calls()`."""

    id: int
    model: str | None
    provider: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_femto: int | None
    usage_source: UsageSource
    streamed: bool
    partial: bool
    status: Status
    error: str | None
    span_path: tuple[str, ...]
    span_kinds: tuple[str, ...]
    latency_s: float
    ttft_s: float | None
    started_at: float
    request_model: str | None = None
    operation: str = "chat"
    cache_hit: bool = False
    estimated_fields: tuple[str, ...] = ()
    cache_write_1h_tokens: int = 0
    tags: Mapping[str, Any] = field(default_factory=dict)
    # The id of the live span the call ran under (exporters link the call to that span's trace).
    span_id: int | None = None
    prompt: Any = None
    response: str | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.cost_femto is None else self.cost_femto / FEMTO_PER_USD

    @property
    def cost(self) -> Decimal | None:
        """Exact cost in USD."""
        return None if self.cost_femto is None else usd(self.cost_femto)

    @property
    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens, self.cached_input_tokens,
                     self.cache_write_tokens, self.reasoning_tokens, self.cache_write_1h_tokens)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = self.cost_usd
        data["span_path"] = list(self.span_path)
        data["span_kinds"] = list(self.span_kinds)
        data["estimated_fields"] = list(self.estimated_fields)
        data["tags"] = dict(self.tags)
        # The hash goes whatever the flag says now: a record holds a prompt only if capture was on when it
        # was made, and the retry hint must tell two prompts apart in a process (or the CLI) reading
        # later with capture off. The hash is not the text, which stays out of the dict.
        data["prompt_hash"] = prompt_hash(self.prompt)
        if not config.capture_content:
            data.pop("prompt")
            data.pop("response")
        return data


# The encoding the SQLite store writes prompts (and tags) with, so that a prompt read back from the
# database hashes the same as the live one.
_prompt_json = json.JSONEncoder(default=str, ensure_ascii=False, sort_keys=True).encode


def prompt_hash(prompt: Any) -> str | None:
    """A stable hash of a captured prompt; None when there is none (or it cannot be encoded)."""
    if prompt is None:
        return None
    try:
        text = _prompt_json(prompt)
    except (TypeError, ValueError, RecursionError):  # keys of mixed types; a circular or too deep structure
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# `Call._build` passes a record's fields positionally in this order; whoever adds, removes or reorders a
# field must update both (this check fails at import otherwise).
_RECORD_FIELDS = ("id", "model", "provider", "input_tokens", "output_tokens", "cached_input_tokens",
                  "cache_write_tokens", "reasoning_tokens", "total_tokens", "cost_femto", "usage_source",
                  "streamed", "partial", "status", "error", "span_path", "span_kinds", "latency_s", "ttft_s",
                  "started_at", "request_model", "operation", "cache_hit", "estimated_fields",
                  "cache_write_1h_tokens", "tags", "span_id", "prompt", "response")
if tuple(f.name for f in fields(CallRecord)) != _RECORD_FIELDS:  # pragma: no cover - a guard for editors
    raise AssertionError("CallRecord's fields changed: update _RECORD_FIELDS and the positional "
                         "CallRecord(...) in Call._build")


_USAGE_FIELDS = frozenset(("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                           "reasoning_tokens", "cache_write_1h_tokens"))


def _checked_fields(fields: Mapping[str, Any]) -> dict[str, int | None]:
    """The user's fields, checked (`usage.user_count`) and as plain ints: a numpy or other Integral count
    kept as it is would reach the totals' Decimal arithmetic and the store, which refuse it."""
    checked: dict[str, int | None] = {}
    for name, value in fields.items():
        if name not in _USAGE_FIELDS:
            raise TypeError(f"set_usage() got an unknown usage field {name!r}; "
                            f"known: {', '.join(sorted(_USAGE_FIELDS))}")
        checked[name] = None if value is None else user_count(name, value)
    return checked


def _has_parts(report: UsageReport) -> bool:
    return bool(report.cached_input_tokens or report.cache_write_tokens or report.reasoning_tokens
                or report.cache_write_1h_tokens)


def _check_parts(report: UsageReport) -> None:
    """Parts over their whole would be priced wrong (each cached token billed on top of a smaller
    prompt): the caller's error, raised; from a provider (`provider_usage`), the parts are left out."""
    problem = impossible_parts(report)
    if problem is not None:
        if not dropping_invalid_counts():
            raise UsageValueError(problem)
        drop_impossible_parts(report)


def _joined(parts: list[str]) -> str:
    """The streamed text. Adapters append a provider's text deltas as they come, unchecked (a check per
    chunk would cost every stream): one that is not text (a gateway's number) is left out here, rather
    than losing the record."""
    try:
        return "".join(parts)
    except TypeError:
        return "".join(part for part in parts if isinstance(part, str))


def _check_subsets(fields: Mapping[str, Any], current: UsageReport | None) -> None:
    """The user's fields, merged over what the call holds, must make parts no larger than their whole
    (`usage.impossible_parts`)."""
    merged = UsageReport() if current is None else current.copy()
    merged.update(UsageReport(**fields))
    problem = impossible_parts(merged)
    if problem is not None:
        raise UsageValueError(problem)


def _drop(text: str) -> None:
    pass


class _NoTags(dict[str, Any]):
    """The tags of every untagged record, shared (a dict per record is a container more for the garbage
    collector to count, per record): read-only, and copied as a plain dict."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this record has no tags to change (set tags with tokenspy.init, a session or a profile)")

    __setitem__ = __delitem__ = __ior__ = setdefault = update = pop = popitem = clear = _read_only  # type: ignore[assignment]

    def __copy__(self) -> dict[str, Any]:
        return {}

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> Any:
        return (dict, ())


_NO_TAGS = _NoTags()


def active_call() -> Call | None:
    """The call an outer layer (a framework adapter) marked active in this context, if any.

    A call ended in another context (a stream finished in a worker thread) cannot deactivate itself
    here, so an ended call is never reported as active.
    """
    call = _active.get()
    return call if call is not None and call.status == "active" else None


class Call:
    """A provider call in flight. Every method is safe to call after the call ended (a no-op)."""

    merged = False
    # Slots: a call is created and ended once per provider call, on every adapter's hot path.
    __slots__ = ("__weakref__", "_answered", "_claimed", "_clock", "_extra_sinks", "_final_text", "_live", "_parts",
                 "_prev_active", "_prompt", "_report", "_started", "_started_wall", "_tags", "_tools", "_ttft",
                 "cache_hit", "error", "id", "operation", "provider", "record", "request_model", "served_model",
                 "service_tier", "span", "speed", "status", "streamed", "tracker")

    def __init__(self, tracker: Tracker, model: str | None, *, provider: str | None = None,
                 prompt: Any = None, streamed: bool = False, parent: Span | None = CURRENT,
                 sinks: Iterable[Sink] = (), operation: str = "chat",
                 tags: Mapping[str, Any] | None = None, tools: Any = None) -> None:
        span = _current_span.get() if parent is CURRENT else parent
        if span is not None and span._ended and parent is CURRENT:
            span = past_ended_sessions(span)
        if span is not None:
            for budget in span.budgets:
                budget.check()
        self.id = next(_ids)
        self.tracker = tracker
        self.request_model = model
        self.provider = provider
        self.streamed = streamed
        self.operation = operation
        self.span = span
        self._prompt = prompt
        self._tools = tools  # the tool definitions offered: part of the prompt an estimate counts
        self._extra_sinks = sinks if type(sinks) is tuple else tuple(sinks)
        self._tags = tags
        self._parts: list[str] = []
        clock = self._clock = tracker.clock
        self._started = clock()
        self._started_wall = time.time()
        self.served_model: str | None = None
        self.service_tier: str | None = None
        self.speed: str | None = None
        self.status: Status = "active"
        self.error: str | None = None
        self.cache_hit = False
        self.record: CallRecord | None = None
        self._final_text: Any = None
        # Taken by the SDK request of this provider call (`claim`); None: not yet, and timed from a
        # framework's first read (`restart_clock`), so from that request once it comes.
        self._claimed: bool | None = False
        self._prev_active: Call | None = None
        self._ttft: float | None = None
        self._report: UsageReport | None = None  # the first usage report becomes it
        self._live = True  # taken by the first end (see _end)
        if call_listeners:
            for listener in call_listeners:
                # `guarded("call listener")` inlined (per call, per listener).
                try:
                    listener(self)
                except Exception as exc:
                    if isinstance(exc, _passthrough()):
                        raise
                    log_internal_error("call listener", exc)

    # -- what layers feed in -------------------------------------------------------------------
    def add_text(self, delta: str) -> None:
        """Streamed output text as the consumer receives it (kept only until the end)."""
        if delta.__class__ is not str and delta is not None and not isinstance(delta, str):
            # Joined and tokenized only at the end: a bad delta would lose the whole record there.
            raise TypeError(f"add_text() takes str, got {type(delta).__name__}")
        if self._ttft is None:
            self._ttft = self._clock() - self._started
        if delta and self.status == "active":
            self._parts.append(delta)

    def mark_first_token(self) -> None:
        """The first output arrived without text (a tool-call delta, an audio chunk)."""
        if self._ttft is None:
            self._ttft = self._clock() - self._started

    def mark_answered(self) -> None:
        """The provider began its answer (a stream's first event), with no output or usage yet: should the
        call fail now, its prompt was billed. (Left unset otherwise: read only when a call fails.)"""
        self._answered = True

    def restart_clock(self) -> None:
        """The request is only being sent now (a stream a framework handed back unread, sent at its first
        read): latency, time to first token and `started_at` count from here, not from the start event.
        A no-op once output has arrived, once an inner layer's request joined the call (it was sent
        before), or after the call ended."""
        if self._ttft is None and not self._claimed and self.status == "active":
            self._started = self._clock()
            self._started_wall = time.time()
            self._claimed = None

    def text_appender(self) -> Callable[[str], None]:
        """`add_text` for an adapter's per-chunk loop, to call when the first text arrives (it is the
        first token): a function that keeps one non-empty delta, with nothing else to check per chunk.
        Text it gets after the call ended is never read."""
        self.mark_first_token()
        return self._parts.append if self.status == "active" else _drop

    def set_usage(self, usage: Any = None, /, **fields: int | None) -> None:
        """Provider-reported usage: any provider's usage object or dict, or the normalized fields."""
        if fields:
            # The user's own numbers: a bad one is their error, raised here. Checked inline for the common
            # case, the first report of plain input and output counts (no subset to compare).
            if len(fields) == 2 and self._report is None:
                given_in, given_out = fields.get("input_tokens", -1), fields.get("output_tokens", -1)
                plain = type(given_in) is int and type(given_out) is int and not (given_in | given_out) >> TOKEN_BITS
            else:
                plain = False
            if not plain:
                fields = _checked_fields(fields)
                if usage is None:  # beside a usage object, the merged report is checked below
                    _check_subsets(fields, self._report)
        if self.status != "active":
            return
        # `guarded("set_usage")` inlined: a context manager per report costs more than the report.
        try:
            if usage is None:
                report = UsageReport(**fields)
            else:
                report = usage_from_any(usage)
                if report is usage:
                    # The caller's own report, made without a check: checked as fields are, never mutated
                    # (nor kept).
                    report = checked_copy(report)
                if fields:
                    report.update(UsageReport(**fields))
            current = self._report
            if current is None:
                if self.provider is None and usage is not None and input_excludes_cache(usage):
                    # Anthropic's (or Bedrock's) shape: its later pieces repeat an input without the cache.
                    self.provider = "bedrock" if is_bedrock_usage(usage) else "anthropic"
                if (report.cached_input_tokens or report.cache_write_tokens or report.reasoning_tokens
                        or report.cache_write_1h_tokens):  # (inline: once per call, on every adapter's path)
                    _check_parts(report)
                self._report = report  # a fresh report, ours to keep
                return
            rebase = usage is not None and (input_excludes_cache(usage) or (
                type(usage) is dict and self.provider in _CACHE_EXCLUSIVE_INPUT))
            problem = None
            if _has_parts(report) or _has_parts(current):
                merged, piece = current.copy(), report.copy()  # what the call would hold, checked first
                if rebase:
                    rebase_excluded_cache(merged, piece)
                merged.update(piece)
                problem = impossible_parts(merged)
                if problem is not None and not dropping_invalid_counts():
                    raise UsageValueError(problem)  # the caller's numbers: nothing applied
            # In place, field by field (each write atomic): a piece another thread reports meanwhile is
            # kept, as a copy put back would lose it.
            if rebase:
                rebase_excluded_cache(current, report)  # reported in pieces: the cache stays in the input
            current.update(report)
            if problem is not None:
                drop_impossible_parts(current)  # a provider's parts over their whole: left out
        except (UsageTypeError, UsageValueError):
            raise  # a usage dict with a bad count (a string, a negative number): the caller's error
        except Exception as exc:
            if isinstance(exc, _passthrough()):
                raise
            log_internal_error("set_usage", exc)

    def add_report(self, report: UsageReport) -> None:
        """`set_usage` for a report the caller built and hands over (adapters' hot path): no shape
        detection, no copy; the call may keep the object."""
        if self.status != "active":
            return
        current = self._report
        if current is None:
            self._report = report
        else:
            current.update(report)

    def add_framework_report(self, report: UsageReport) -> None:
        """`add_report` for the usage a framework layer relays (a LangChain message's `usage_metadata`)
        at its end. Where an SDK request under it reported this provider call too, the request's numbers
        stay: they are the provider's own, read off the wire, while a framework's are derived from them
        (summed over a stream's chunks, or missing a field). The framework's fill in the rest."""
        current = self._report
        if current is None or not self._claimed:
            self.add_report(report)
        elif self.status == "active":
            current.fill(report)

    def set_model(self, served_model: str | None) -> None:
        """The model the provider says it served (priced in preference to the requested name)."""
        if served_model and self.status == "active" and isinstance(served_model, str):  # a gateway's may be anything
            self.served_model = served_model

    def set_provider(self, provider: str | None) -> None:
        """Who served the call, when a layer below the one that started it knows better (the host an SDK
        client's base URL names, under a framework model that says "openai" for any host)."""
        if provider and self.status == "active" and isinstance(provider, str):
            self.provider = provider

    def set_service_tier(self, tier: str | None) -> None:
        """The service tier the provider says it served the call at (priced at that tier's rates)."""
        if tier and self.status == "active" and isinstance(tier, str):  # a gateway's may be anything
            self.service_tier = tier

    def set_speed(self, speed: str | None) -> None:
        """The inference speed the provider says it served the call at (Anthropic's "fast" mode is priced at
        its own rates)."""
        if speed and self.status == "active" and isinstance(speed, str):  # a gateway's may be anything
            self.speed = speed

    def set_cache_hit(self) -> None:
        """The framework answered from its own cache: no provider call, no cost. Nor a stream: a replay of
        the cached answer (LangChain's v3 events, a `streaming=True` model) has no time to first token."""
        self.cache_hit = True
        self.streamed = False
        self._ttft = None

    def set_response_text(self, text: str | Callable[[], str] | None) -> None:
        """The whole response of a non-streamed call, used only if its usage must be estimated."""
        self._final_text = text

    def set_prompt(self, prompt: Any) -> None:
        """The prompt actually sent, when an adapter learns it after the start (a completion a framework
        sends as chat messages): what an estimate counts, and content capture keeps."""
        if self.status == "active":
            self._prompt = prompt

    # -- layer dedupe -------------------------------------------------------------------------
    def activate(self, *, alongside: Call | None = None, batch: bool = False) -> None:
        """Mark this call as the one an SDK call started in this context belongs to.

        `alongside`: the call active for the same provider call, of which this is another record (two
        framework handlers feeding different trackers, each recording the run): this call is not made
        active, but gets the usage, model and service tier an inner layer merges into `alongside`.

        `batch=True`: one of several calls a framework started for requests it sends next, which cannot
        be told apart here (LangChain's `generate()` with several prompts, whose one completion request
        may carry them all): an inner layer's requests merge into none of them, each call keeping the
        usage the framework reports for it. The first call of a batch is made active and the others join
        it; `deactivate()` on any of them ends the batch (a failed request ends the framework's batch,
        whose other calls may never end).
        """
        if alongside is not None:
            MergedCall._also[alongside] = (*MergedCall._also.get(alongside, ()), self)
            global any_echo
            any_echo = True
            _echoes.add(self)
            return
        active = _active.get()
        # A call that ended in another context (LangChain ends `agenerate`'s runs in tasks of their own) is
        # still set here: skipped, or every call of a long-lived task would keep the one before it alive.
        while active is not None and active.status != "active":
            active = active._prev_active
        if batch:
            MergedCall._batch.add(self)
            if active is not None and active.status == "active" and active in MergedCall._batch:
                return  # the batch already open here
        self._prev_active = active
        _active.set(self)

    def deactivate(self) -> None:
        active = _active.get()
        if active is self:
            _active.set(self._prev_active)
        elif (active is not None and MergedCall._batch and self in MergedCall._batch
              and active in MergedCall._batch):
            _active.set(active._prev_active)  # the batch this call joined

    def claim(self) -> bool:
        with _end_lock:
            if self._claimed or self.status != "active":
                return False
            if self._claimed is None and self._ttft is None:
                # Sent at a framework's first read, the request goes out only now: the LLM built its
                # client in between (the first call of a process, lazily).
                self._started = self._clock()
                self._started_wall = time.time()
            self._claimed = True
            return True

    def adopt_inner(self) -> bool:
        """A model call of another framework layer starting inside this one (a wrapper model's inner
        model): the first becomes this call's record (True), once; a later one is a provider call of its
        own. Separate from `claim`, which the SDK request underneath then takes."""
        with _end_lock:
            # Not once its own request went out (an SDK request claimed it) or its answer began: a model
            # call starting then is another provider call (a judge run from a callback, a model called
            # while a stream is read).
            if self.status != "active" or self._claimed or self._ttft is not None or self in _adopted:
                return False
            global any_adopted
            any_adopted = True
            _adopted.add(self)
            return True

    def has_inner(self) -> bool:
        """An inner framework model call merged into this one (`adopt_inner`): the provider call's usage
        and model are the inner layer's, not what the outer layer's result repeats (a router's answer is
        its last model's, which may be another provider call)."""
        return self in _adopted

    def release(self) -> None:
        """Undo `claim`: the inner layer's request failed before anything was billed."""
        with _end_lock:
            self._claimed = False

    # -- ends ----------------------------------------------------------------------------------
    def finish(self, usage: Any = None) -> CallRecord | None:
        if usage is not None:
            self.set_usage(usage)
        return self._end("finished", None)

    def abort(self) -> CallRecord | None:
        """The consumer stopped early (break, close, cancellation): `partial=True`."""
        return self._end("aborted", None)

    def fail(self, error: BaseException | str | None = None) -> CallRecord | None:
        if error is not None and not isinstance(error, BaseException | str):
            raise TypeError(f"fail() takes an exception or a message, got {type(error).__name__}")
        return self._end("failed", error_text(error) if isinstance(error, BaseException)
                         else redact_keys(error) if error else "error")

    def __enter__(self) -> Call:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
            self.abort()
        else:
            self.fail(exc)

    def __del__(self) -> None:
        try:
            # Not at interpreter shutdown: the stores have flushed, and prices can no longer be imported.
            if self.status == "active" and not sys.is_finalizing():
                self.abort()
        except BaseException:  # interpreter shutdown: nothing is safe to touch
            pass

    @property
    def ended(self) -> bool:
        return self.status != "active"

    def _end(self, status: Status, error: str | None) -> CallRecord | None:
        if inherited_below and self.id < inherited_below:
            return None  # a forked process's copy of its parent's call: however it ends here, the parent records it
        # The first end wins. Deleting the `_live` slot is one atomic step under the GIL (it holds True, whose
        # release runs no code): no lock per call (a shared lock convoys threads, and costs more than this).
        try:
            del self._live
        except AttributeError:
            return None
        self.status = status
        if error is not None:
            self.error = error
        if _active.get() is self:  # deactivate(), inlined
            _active.set(self._prev_active)
        try:
            record = self._build(status, error)
        except Exception as exc:
            log_internal_error("call end", exc)
            return None
        finally:
            # What was kept only to estimate usage goes with the end (a record may outlive its call).
            if self._parts:
                self._parts = []
            self._prompt = self._tools = None
            if self._final_text is not None:
                self._final_text = None
        self.record = record
        self.tracker.add(record)
        span = self.span
        if any_echo and self in _echoes:
            # Another record of a provider call `alongside` records: its own tracker and views get it,
            # while the spans' sinks (sessions) and budgets already have that call once.
            span = None
        sinks = (*span.sinks, *self._extra_sinks) if span is not None else self._extra_sinks
        for sink in sinks:
            # `guarded("sink")` inlined (per record, per sink).
            try:
                sink.add(record)
            except Exception as exc:
                if isinstance(exc, _passthrough()):
                    raise
                log_internal_error("sink", exc)
        if span is not None:
            for budget in span.budgets:
                budget.add(record.cost_femto)
        return record

    def _priced_by_name(self, model: str | None) -> ModelRates | None:
        """`model` (the served name) has no price, or the user set prices: the rates of the name
        `PriceBook.priced_name` picks of the served and the requested one; an unpriced call is warned
        about, once, under the name that has none."""
        prices, provider, tier, speed, at = (self.tracker.prices, self.provider, self.service_tier, self.speed,
                                             self._started_wall)
        return prices.rates_for(prices.priced_name(model, self.request_model, provider, tier, speed, at), provider,
                                tier, True, speed, at)

    def _build(self, status: Status, error: str | None) -> CallRecord:
        # The call's latency ends here, before tokenspy's own work (estimates, the first price lookup).
        latency = self._clock() - self._started
        rep = self._report
        if rep is None:
            rep = _NO_REPORT
        model = self.served_model or self.request_model
        input_tokens = rep.input_tokens
        output_tokens = rep.output_tokens
        estimated: tuple[str, ...] = ()
        text: str | None = None
        # A failed call is partial (and billed) only if an answer had started.
        response_started = status == "failed" and (self._ttft is not None or not rep.is_empty()
                                                    or hasattr(self, "_answered"))
        if input_tokens is None or output_tokens is None:  # not the common case: the provider reported both
            billed = status != "failed" or response_started
            counted_as = tokenizer_model(model, self.request_model)
            if input_tokens is None:
                # A request that got an answer (or was abandoned mid-answer) was billed for its prompt.
                input_tokens = (count_prompt_tokens(self._prompt, counted_as, self.provider)
                                + count_tool_tokens(self._tools, counted_as) if billed else 0)
                # Never below the subsets the provider did report (cache reads and writes are input).
                input_tokens = max(input_tokens, (rep.cached_input_tokens or 0) + (rep.cache_write_tokens or 0))
                if billed:
                    estimated = ("input_tokens",)
            if output_tokens is None and self.operation == "embeddings":
                output_tokens = 0  # an embedding has no output tokens: nothing to estimate
            elif output_tokens is None:
                text = _joined(self._parts)
                if not text and self._final_text is not None:
                    final = self._final_text
                    text = final() if callable(final) else final
                # Reasoning is billed as output but never streamed as text: a reported count adds to it.
                output_tokens = count_tokens(text or "", counted_as) + (rep.reasoning_tokens or 0)
                if billed:
                    estimated = (*estimated, "output_tokens")
            source: UsageSource = ("provider" if not estimated
                                   else "estimated" if rep.input_tokens is None and rep.output_tokens is None
                                   else "mixed")
        else:
            source = "provider"
        # The Usage fields as locals: building a frozen Usage per call costs more than pricing it.
        cached_input_tokens = rep.cached_input_tokens or 0
        cache_write_tokens = rep.cache_write_tokens or 0
        cache_write_1h_tokens = rep.cache_write_1h_tokens or 0
        if self.cache_hit:
            cost: int | None = 0
        else:
            prices = self.tracker.prices
            # Priced at the time the call was made: genai-prices dates its price changes.
            rates = prices.rates_for(model, self.provider, self.service_tier, False, self.speed, self._started_wall)
            if rates is None or (prices.overridden and rates.source != "user" and model != self.request_model):
                # A price the user set for the name they asked for (an Azure deployment) beats the served
                # model's listed one: checked only once `set_price` was used.
                rates = self._priced_by_name(model)
            cost = None if rates is None else rates._cost(input_tokens, output_tokens, cached_input_tokens,
                                                            cache_write_tokens, cache_write_1h_tokens)
        tags: Mapping[str, Any] = config.tags
        span = self.span
        if span is not None:
            if span.tags:
                tags = {**tags, **span.tags}
            path, kinds, span_id = span.path, span.kinds, span.id
        else:
            path = kinds = ()
            span_id = None
        if self._tags:
            tags = {**tags, **self._tags}
        if tags is config.tags:  # never the process-wide dict itself: a user may change a record's tags
            tags = {**tags} if tags else _NO_TAGS
        if config.capture_content:
            prompt, response = plain_prompt(self._prompt), text
            if response is None:  # not needed for an estimate: the streamed text, or the whole answer
                response = _joined(self._parts)
                if not response and self._final_text is not None:
                    final = self._final_text
                    response = final() if callable(final) else final
        else:
            prompt = response = None
        # Positional, in the order of _RECORD_FIELDS (checked at import): a keyword call of every field
        # costs several times more, once per record.
        return CallRecord(
            self.id, model, self.provider,  # id, model, provider
            input_tokens, output_tokens,  # input_tokens, output_tokens
            cached_input_tokens, cache_write_tokens,  # cached_input_tokens, cache_write_tokens
            rep.reasoning_tokens or 0, input_tokens + output_tokens,  # reasoning_tokens, total_tokens
            cost, source, self.streamed,  # cost_femto, usage_source, streamed
            status == "aborted" or response_started,  # partial
            status, error,  # status, error
            path, kinds,  # span_path, span_kinds
            latency, self._ttft, self._started_wall,  # latency_s, ttft_s, started_at
            self.request_model, self.operation, self.cache_hit,  # request_model, operation, cache_hit
            estimated, cache_write_1h_tokens,  # estimated_fields, cache_write_1h_tokens
            tags, span_id,  # tags, span_id
            prompt, response,  # prompt, response
        )


class MergedCall:
    """What an inner layer gets when an outer layer already tracks the same provider call.

    It forwards the inner layer's exact usage and served model into the outer call (and into the other
    records of the same provider call, see `Call.activate`; into none for a framework batch); text and
    ends are the outer layer's business, so they are no-ops here: one provider call, one record.
    """

    merged = True
    # Filled by `Call.activate` (see there), while such calls run; weak, so an entry goes with its call.
    # The other records of the provider call a call is active for:
    _also: ClassVar[WeakKeyDictionary[Call, tuple[Call, ...]]] = WeakKeyDictionary()
    # The calls of framework batches (an inner layer merges into none of them):
    _batch: ClassVar[WeakSet[Call]] = WeakSet()

    def __init__(self, outer: Call) -> None:
        self.outer = outer
        self.status: Status = "active"
        self.record: CallRecord | None = None
        self.reported = False  # forwarded usage into the outer call
        # The calls this view reports to: the outer call, with the other records of the same provider call.
        self._targets: tuple[Call, ...] = (outer,)
        if MergedCall._batch and outer in MergedCall._batch:
            # Every request of a batch merges here, into nothing: none of them keeps the claim.
            outer.release()
            self._targets = ()
        elif MergedCall._also:
            self._targets = (outer, *MergedCall._also.get(outer, ()))

    def add_text(self, delta: str) -> None:
        pass

    def mark_first_token(self) -> None:
        pass

    def mark_answered(self) -> None:
        self.reported = True  # billed: the outer call is not handed back to a retry (see `fail`)
        for call in self._targets:
            call.mark_answered()

    def text_appender(self) -> Callable[[str], None]:
        return _drop

    def set_usage(self, usage: Any = None, /, **fields: int | None) -> None:
        self.reported = True
        for call in self._targets:
            call.set_usage(usage, **fields)

    def add_report(self, report: UsageReport) -> None:
        self.reported = True
        targets = self._targets
        if targets:
            targets[0].add_report(report)
            for call in targets[1:]:
                call.add_report(report.copy())  # a call keeps the report it is given, and updates it

    def add_framework_report(self, report: UsageReport) -> None:
        self.reported = True
        for i, call in enumerate(self._targets):
            call.add_framework_report(report if i == 0 else report.copy())

    def set_model(self, served_model: str | None) -> None:
        for call in self._targets:
            call.set_model(served_model)

    def set_provider(self, provider: str | None) -> None:
        for call in self._targets:
            call.set_provider(provider)

    def set_service_tier(self, tier: str | None) -> None:
        for call in self._targets:
            call.set_service_tier(tier)

    def set_speed(self, speed: str | None) -> None:
        for call in self._targets:
            call.set_speed(speed)

    def set_cache_hit(self) -> None:
        pass

    def set_response_text(self, text: str | Callable[[], str] | None) -> None:
        pass

    def activate(self, *, alongside: Call | None = None, batch: bool = False) -> None:
        pass  # the outer call stays the active one: the requests under this view are its

    def has_inner(self) -> bool:
        return False

    def deactivate(self) -> None:
        pass

    def set_prompt(self, prompt: Any) -> None:
        for call in self._targets:
            call.set_prompt(prompt)  # the one request both layers see

    def _end(self, status: Status) -> None:
        self.status = status

    def finish(self, usage: Any = None) -> None:
        if usage is not None:
            self.set_usage(usage)
        self._end("finished")

    def abort(self) -> None:
        if self.status == "active":
            # The request was cut (cancelled, its stream closed) before the answer began: the outer call,
            # which has nothing more to wait for, ends with it. Its framework usually says so too, but not
            # always (LangChain's `agenerate` fires no error for a task cancelled in its `gather`, under
            # `asyncio.timeout()`). Once output has begun, the framework's end has what it streamed.
            for call in self._targets:
                if call._ttft is None and call.status == "active":
                    call.abort()
        self._end("aborted")

    def fail(self, error: BaseException | str | None = None) -> None:
        # A request that failed with nothing billed (a 429, a 5xx, a connection error) hands the outer call
        # back: the framework's own retry (LlamaIndex's tenacity) is the same call, and merges into it.
        if self.status == "active" and not self.reported:
            self.outer.release()
        self._end("failed")

    @property
    def ended(self) -> bool:
        return self.status != "active"

    def __enter__(self) -> MergedCall:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end("finished")
