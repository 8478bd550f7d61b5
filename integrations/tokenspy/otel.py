"""OpenTelemetry export: every LLM call as a GenAI span plus metrics, every tokenspy span as a span.

    tokenspy.init(otel=True)                       # global tracer and meter providers
    tokenspy.otel.enable_otel(tracker, tracer_provider=tp, meter_provider=mp)
    tokenspy.otel.disable_otel()

A trace backend then shows the report's tree: a tokenspy span (`@profile`, a session, a LangChain
chain) opens an OTel span parented to the OTel span of its tokenspy parent, else to the active OTel
context; an LLM call's span is parented to the OTel span of the tokenspy span it ran under, else to
the OTel context active when the call started (not when its stream ended). Call spans are emitted
when the call's record is final (usage reconciled, cost known) with the call's real start and end
times. Attribute names follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`); what they
do not cover is under `tokenspy.*`.

Only the OpenTelemetry API is imported here, lazily: installing an SDK and an exporter (or any
other provider) is the application's choice (`pip install 'tokenspy[otel]'` brings the usual ones).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tokenspy_core import Call, CallRecord, Span, Tracker, config, default_tracker
from tokenspy_core.call import call_listeners
from tokenspy_core.errors import error_text
from tokenspy_core.pricing import FEMTO_PER_USD
from tokenspy_core.spans import span_listeners

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import SpanContext, TracerProvider

__all__ = ["disable_otel", "enable_otel", "is_enabled"]

_INSTALL_HINT = "pip install 'tokenspy[otel]'"
# Ended tokenspy spans whose OTel context is kept: a stream finished after its function returned
# still joins that function's trace. Bounded, so a long-running process keeps a fixed memory.
_ENDED_CONTEXTS = 4096
# Calls in flight whose starting OTel context is kept until their record. An entry outlives its call
# only if the call never made a record (an internal error at its end): the bound drops those.
_STARTED_CONTEXTS = 65536
# The GenAI semantic conventions' advisory bucket boundaries for these two histograms.
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
# Our provider names (the SDKs' and LangChain's) -> the conventions' well-known `gen_ai.provider.name`.
_PROVIDERS = {"azure": "azure.ai.openai", "azure_openai": "azure.ai.openai", "bedrock": "aws.bedrock",
              "amazon_bedrock": "aws.bedrock", "aws": "aws.bedrock", "vertexai": "gcp.vertex_ai",
              "google_vertexai": "gcp.vertex_ai", "gemini": "gcp.gemini", "google": "gcp.gemini",
              "google_genai": "gcp.gen_ai", "xai": "x_ai", "x-ai": "x_ai", "mistral": "mistral_ai",
              "mistralai": "mistral_ai", "watsonx": "ibm.watsonx.ai", "ibm": "ibm.watsonx.ai"}
# Where `gen_ai.system`'s well-known value differs from `gen_ai.provider.name`'s.
_OLD_SYSTEMS = {"x_ai": "xai"}
# tokenspy span kinds that have a GenAI operation of their own.
_SPAN_OPERATIONS = {"agent": ("invoke_agent", "gen_ai.agent.name"),
                    "tool": ("execute_tool", "gen_ai.tool.name")}


def _otel() -> tuple[Any, Any]:
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise ImportError("tokenspy's OpenTelemetry export needs the OpenTelemetry packages: "
                          f"{_INSTALL_HINT}") from exc
    return metrics, trace


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _provider_name(provider: str | None) -> str | None:
    if not provider:
        return None
    return _PROVIDERS.get(provider.lower(), provider.lower())


def _error_type(error: str | None) -> str:
    # CallRecord.error is "ExceptionType: message"; the conventions want the type alone.
    head = (error or "").split(":", 1)[0].strip()
    return head if head and " " not in head else "_OTHER"


def _status_description(record: CallRecord) -> str | None:
    """A failed call's status text: its error, capture-free whatever `capture_content` says.

    Without content capture the record's error is already what `error_text` keeps (the message only
    for provider and network errors). With it, the record keeps every message, a pydantic
    `ValidationError` quoting the answer included, and the exception is gone: only the type is exported.
    """
    if not config.capture_content:
        return record.error
    error_type = _error_type(record.error)
    return None if error_type == "_OTHER" else error_type


def _user_attributes(span: Span) -> dict[str, Any]:
    """Span tags and attributes that are valid OTel attribute values (others are skipped, not coerced)."""
    out: dict[str, Any] = {}
    for prefix, values in (("tokenspy.tag.", span.tags), ("", span.attributes)):
        for key, value in values.items():
            if _valid_value(value):
                out[f"{prefix}{key}"] = value
    return out


def _valid_value(value: Any) -> bool:
    if isinstance(value, str | bool | int | float):
        return True
    return (isinstance(value, list | tuple) and bool(value)
            and all(isinstance(v, str | bool | int | float) for v in value)
            and len({type(v) for v in value}) == 1)


def call_attributes(record: CallRecord) -> dict[str, Any]:
    """The span attributes of one LLM call (GenAI conventions first, then tokenspy's own)."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": record.operation}
    provider = _provider_name(record.provider)
    if provider:
        # `gen_ai.system` is the older name of `gen_ai.provider.name`; backends read one or the other.
        attrs["gen_ai.provider.name"] = provider
        attrs["gen_ai.system"] = _OLD_SYSTEMS.get(provider, provider)
    request_model = record.request_model or record.model
    if request_model:
        attrs["gen_ai.request.model"] = request_model
    # A failed call names a response model only if an answer had started (partial: text or usage
    # arrived) or the provider named another model than the one asked for; one that failed before any
    # answer does not.
    if record.model and (record.status != "failed" or record.partial or record.model != record.request_model):
        attrs["gen_ai.response.model"] = record.model
    attrs["gen_ai.request.stream"] = record.streamed
    attrs["gen_ai.usage.input_tokens"] = record.input_tokens
    attrs["gen_ai.usage.output_tokens"] = record.output_tokens
    if record.cached_input_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = record.cached_input_tokens
    if record.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = record.cache_write_tokens
    if record.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = record.reasoning_tokens
    if record.ttft_s is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = record.ttft_s
    if record.cost_femto is None:
        # Unknown price: no cost attribute at all, so no backend sums it as $0.
        attrs["tokenspy.priced"] = False
    else:
        attrs["tokenspy.priced"] = True
        attrs["tokenspy.cost_usd"] = record.cost_femto / FEMTO_PER_USD
    attrs["tokenspy.partial"] = record.partial
    attrs["tokenspy.usage_source"] = record.usage_source
    attrs["tokenspy.status"] = record.status
    if record.estimated_fields:
        attrs["tokenspy.estimated_fields"] = list(record.estimated_fields)
    if record.cache_hit:
        attrs["tokenspy.cache_hit"] = True
    if record.span_path:
        attrs["tokenspy.span_path"] = "/".join(record.span_path)
    for key, value in record.tags.items():
        if _valid_value(value):
            attrs[f"tokenspy.tag.{key}"] = value
    if record.status == "failed":
        attrs["error.type"] = _error_type(record.error)
    return attrs


class _Exporter:
    """One enablement: the tracker subscription, the span listeners and the live span map."""

    def __init__(self, tracker: Tracker, tracer_provider: TracerProvider | None,
                 meter_provider: MeterProvider | None) -> None:
        from tokenspy import __version__

        metrics, self._trace = _otel()
        from opentelemetry import context as otel_context

        self._current_context = otel_context.get_current
        self.key = (tracker, tracer_provider, meter_provider)
        self.tracker = tracker
        tracers = tracer_provider or self._trace.get_tracer_provider()
        self.tracer = tracers.get_tracer("tokenspy", __version__)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("tokenspy", __version__)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.cost = meter.create_counter(
            "tokenspy.cost", unit="{USD}", description="USD spent on priced LLM calls.")
        self._lock = threading.RLock()  # a call collected while this thread holds it records into it
        # tokenspy span id -> its open OTel span (and the finalizer that ends it if the span is lost).
        self._live: dict[int, tuple[OtelSpan, weakref.finalize[Any, Any]]] = {}
        self._ended: OrderedDict[int, SpanContext] = OrderedDict()
        # Ids of tokenspy spans collected without being ended (an adapter lost them). Their OTel spans
        # end at the next event, not in the GC callback: ending runs span processors and exporters,
        # which take locks the interrupted code may hold.
        self._lost: deque[int] = deque()
        # Call id -> the OTel context active where the call started: the parent of a call made outside
        # any tokenspy span. Its record (and span) comes at the stream's end, maybe under another request's
        # span or in a worker thread with no context. Plain dict steps (atomic): a call's record may be
        # made from its __del__, at any point of this thread.
        self._started_in: dict[int, Context] = {}
        # Spans and the tracker call these inside their own internal-error guard.
        self._listener = (self._on_span_start, self._on_span_end)
        self._unsubscribe: Callable[[], None] | None = None

    def _reap_lost(self) -> None:
        while self._lost:
            span_id = self._lost.popleft()
            with self._lock:
                entry = self._live.pop(span_id, None)
            if entry is not None:
                entry[0].set_attribute("tokenspy.incomplete", True)
                entry[0].end()

    def install(self) -> None:
        span_listeners.append(self._listener)
        call_listeners.append(self._on_call_start)
        self._unsubscribe = self.tracker.subscribe(self._on_record)

    def close(self) -> None:
        if self._listener in span_listeners:
            span_listeners.remove(self._listener)
        if self._on_call_start in call_listeners:
            call_listeners.remove(self._on_call_start)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            still_open = list(self._live.values())
            self._live.clear()
            self._ended.clear()
            self._lost.clear()
        self._started_in.clear()
        # Export what is open rather than lose it: these spans end at disable time.
        for otel_span, finalizer in still_open:
            finalizer.detach()
            otel_span.set_attribute("tokenspy.incomplete", True)
            otel_span.end()

    # -- parenting ----------------------------------------------------------------------------------
    def _context_of(self, span_id: int | None) -> Context | None:
        """The OTel context of a tokenspy span (open or recently ended); None = the active context."""
        if span_id is None:
            return None
        with self._lock:
            live = self._live.get(span_id)
            ended = self._ended.get(span_id) if live is None else None
        if live is not None:
            ctx: Context = self._trace.set_span_in_context(live[0])
            return ctx
        if ended is not None:
            ctx = self._trace.set_span_in_context(self._trace.NonRecordingSpan(ended))
            return ctx
        return None

    # -- tokenspy spans -----------------------------------------------------------------------------
    def _on_span_start(self, span: Span) -> None:
        self._reap_lost()
        parent = self._context_of(span.parent.id) if span.parent is not None else None
        attrs: dict[str, Any] = {"tokenspy.span.kind": span.kind, "tokenspy.span_path": "/".join(span.path)}
        operation = _SPAN_OPERATIONS.get(span.kind)
        if operation is not None:
            attrs["gen_ai.operation.name"] = operation[0]
            attrs[operation[1]] = span.name
        attrs.update(_user_attributes(span))
        otel_span = self.tracer.start_span(span.name, context=parent, start_time=_ns(span.start_time),
                                           attributes=attrs)
        # A span an adapter loses (never ended) still ends, as incomplete, after it is collected.
        finalizer = weakref.finalize(span, self._lost.append, span.id)
        with self._lock:
            self._live[span.id] = (otel_span, finalizer)

    def _on_span_end(self, span: Span, error: BaseException | None) -> None:
        with self._lock:
            entry = self._live.pop(span.id, None)
        if entry is None:
            return
        otel_span, finalizer = entry
        finalizer.detach()
        attrs = _user_attributes(span)
        if attrs:
            otel_span.set_attributes(attrs)
        # A generator closed early (GeneratorExit) ended normally from the caller's point of view, and so
        # did a cancelled task: LangGraph cancels a node when its stream is closed early, with an object
        # as the message (an error description that changes every run).
        if error is not None and not isinstance(error, GeneratorExit) and type(error).__name__ != "CancelledError":
            otel_span.set_attribute("error.type", type(error).__qualname__)
            # What a failed record keeps: an exception's message can quote the prompt or the answer
            # (pydantic's validation errors do), so it goes out only where it cannot, or with
            # capture_content; and no stack trace, whose last line is that message.
            text = error_text(error)
            message = text.partition(": ")[2] if text != type(error).__name__ else ""
            otel_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message or None))
            if isinstance(error, Exception):
                otel_span.add_event("exception", {"exception.type": type(error).__qualname__,
                                                  "exception.message": message or type(error).__name__})
        end = span.end_time
        otel_span.end(end_time=_ns(end) if end is not None else None)
        with self._lock:
            self._ended[span.id] = otel_span.get_span_context()
            while len(self._ended) > _ENDED_CONTEXTS:
                self._ended.popitem(last=False)

    # -- LLM calls ----------------------------------------------------------------------------------
    def _on_call_start(self, call: Call) -> None:
        if call.tracker is not self.tracker:
            return  # its record never comes here
        started_in = self._started_in
        started_in[call.id] = self._current_context()
        if len(started_in) > _STARTED_CONTEXTS:
            # list(dict) of int keys runs no Python code: a consistent snapshot even with other threads.
            for call_id in list(started_in)[:len(started_in) - _STARTED_CONTEXTS]:
                started_in.pop(call_id, None)

    def _on_record(self, record: CallRecord) -> None:
        self._reap_lost()
        attrs = call_attributes(record)
        model = record.request_model or record.model
        name = f"{record.operation} {model}" if model else record.operation
        started_in = self._started_in.pop(record.id, None)
        parent = self._context_of(record.span_id)
        if parent is None:
            # No tokenspy span (or one from before the export): where the call started, not where its
            # record is made (a stream read later under another span, or in a pool thread).
            parent = started_in
        otel_span = self.tracer.start_span(name, context=parent, kind=self._trace.SpanKind.CLIENT,
                                           start_time=_ns(record.started_at), attributes=attrs)
        if record.status == "failed":
            otel_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, _status_description(record)))
        otel_span.end(end_time=_ns(record.started_at + record.latency_s))
        self._record_metrics(record, attrs)

    def _record_metrics(self, record: CallRecord, span_attrs: Mapping[str, Any]) -> None:
        # Metric attributes: the conventions' low-cardinality set (no span path, tags or ids).
        base = {key: span_attrs[key] for key in ("gen_ai.operation.name", "gen_ai.provider.name",
                                                   "gen_ai.request.model", "gen_ai.response.model")
                if key in span_attrs}
        duration_attrs = dict(base)
        if record.status == "failed":
            duration_attrs["error.type"] = span_attrs["error.type"]
        self.duration.record(record.latency_s, attributes=duration_attrs)
        if record.status != "failed" or record.total_tokens:
            self.token_usage.record(record.input_tokens, attributes={**base, "gen_ai.token.type": "input"})
            self.token_usage.record(record.output_tokens, attributes={**base, "gen_ai.token.type": "output"})
        if record.cost_femto is not None:
            self.cost.add(record.cost_femto / FEMTO_PER_USD, attributes=base)


_state_lock = threading.Lock()
_active: _Exporter | None = None


def enable_otel(tracker: Tracker | None = None, *, tracer_provider: TracerProvider | None = None,
                meter_provider: MeterProvider | None = None) -> None:
    """Export `tracker`'s calls (the default tracker's if None) and all tokenspy spans to OpenTelemetry.

    Uses the global tracer and meter providers unless given. Idempotent: enabling again with the same
    arguments changes nothing; with other arguments, the previous export is replaced.
    """
    global _active
    target = tracker if tracker is not None else default_tracker()
    with _state_lock:
        if _active is not None:
            if _active.key == (target, tracer_provider, meter_provider):
                return
            _active.close()
            _active = None
        exporter = _Exporter(target, tracer_provider, meter_provider)
        exporter.install()
        _active = exporter


def disable_otel() -> None:
    """Stop exporting: unsubscribe from the tracker, remove the span listeners, end open spans."""
    global _active
    with _state_lock:
        if _active is not None:
            _active.close()
            _active = None


def is_enabled() -> bool:
    return _active is not None
