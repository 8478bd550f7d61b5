"""OpenTelemetry export: GenAI call spans, the span tree, metrics, enable/disable."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from otel_harness import Otel

import tokenspy
from tokenspy.otel import call_attributes, disable_otel, enable_otel, is_enabled
from tokenspy_core import Span, default_tracker, use_span
from tokenspy_core.spans import span_listeners


def test_call_span_carries_genai_and_tokenspy_attributes(otel: Otel) -> None:
    tokenspy.set_price("gpt-4o", input=2, output=8, cached_input=1, cache_write=3)
    record = tokenspy.record("gpt-4o", provider="openai", input_tokens=1_000, output_tokens=200,
                             cached_input_tokens=300, cache_write_tokens=100, reasoning_tokens=50,
                             tags={"customer": "acme", "ignored": object()})
    assert record is not None
    (span,) = otel.spans()
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    assert span.parent is None and span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": 1_000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 300,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.usage.reasoning.output_tokens": 50,
        # 600 * 2 + 300 * 1 + 100 * 3 + 200 * 8 per million
        "tokenspy.cost_usd": pytest.approx(0.0034),
        "tokenspy.priced": True,
        "tokenspy.partial": False,
        "tokenspy.usage_source": "provider",
        "tokenspy.status": "finished",
        "tokenspy.tag.customer": "acme",
    }
    # The record's own clock: started_at (wall) and latency_s.
    assert span.start_time == int(record.started_at * 1e9)
    assert span.end_time == int((record.started_at + record.latency_s) * 1e9)


def test_failed_call_span_has_error_status_and_type(otel: Otel) -> None:
    call = tokenspy.start_call("gpt-4o-mini", provider="anthropic", prompt="hi", stream=True)
    call.fail(TimeoutError("read timed out"))
    (span,) = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "TimeoutError: read timed out"
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "TimeoutError" and attrs["tokenspy.status"] == "failed"
    assert attrs["gen_ai.request.stream"] is True and attrs["gen_ai.usage.input_tokens"] == 0
    # Nothing answered: no response model is claimed.
    assert "gen_ai.response.model" not in attrs


def test_aborted_stream_is_partial_and_estimated(otel: Otel) -> None:
    tokenspy.set_price("gpt-4o", input=1, output=1)
    call = tokenspy.start_call("gpt-4o", prompt="Tell me a long story")
    call.add_text("Once upon a time")
    call.abort()
    attrs = dict(otel.spans()[0].attributes or {})
    assert attrs["tokenspy.partial"] is True and attrs["tokenspy.status"] == "aborted"
    assert attrs["tokenspy.usage_source"] == "estimated"
    assert attrs["tokenspy.estimated_fields"] == ("input_tokens", "output_tokens")
    assert attrs["gen_ai.usage.output_tokens"] > 0 and "gen_ai.response.time_to_first_chunk" in attrs


def test_unpriced_call_has_no_cost_attribute(otel: Otel) -> None:
    with pytest.warns(UserWarning, match="no price known"):
        tokenspy.record("model-nobody-prices", input_tokens=10, output_tokens=1)
    attrs = dict(otel.spans()[0].attributes or {})
    assert attrs["tokenspy.priced"] is False and "tokenspy.cost_usd" not in attrs
    assert otel.metric_points("tokenspy.cost") == []


def test_call_is_parented_to_the_users_active_otel_span(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    tokenspy.set_price("m", input=1, output=1)
    with tracer.start_as_current_span("handle request") as request:
        tokenspy.record("m", input_tokens=1, output_tokens=1)
    call = otel.span("chat m")
    assert call.parent is not None and call.parent.span_id == request.get_span_context().span_id
    assert call.context.trace_id == request.get_span_context().trace_id


def test_profile_spans_form_the_same_tree_under_the_users_span(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    tokenspy.set_price("m", input=1, output=1)

    @tokenspy.profile
    def inner() -> None:
        tokenspy.record("m", input_tokens=5, output_tokens=5)

    @tokenspy.profile(tags={"team": "search"})
    def outer() -> None:
        inner()
        tokenspy.record("m", input_tokens=1, output_tokens=1)

    with tracer.start_as_current_span("handle request") as request:
        outer()
    outer_span, inner_span = otel.span("outer"), otel.span("inner")
    calls = sorted((s for s in otel.spans() if s.name == "chat m"), key=lambda s: s.start_time or 0)
    assert outer_span.parent is not None and outer_span.parent.span_id == request.get_span_context().span_id
    assert inner_span.parent is not None and inner_span.parent.span_id == outer_span.context.span_id
    assert calls[0].parent is not None and calls[0].parent.span_id == inner_span.context.span_id
    assert calls[1].parent is not None and calls[1].parent.span_id == outer_span.context.span_id
    assert {s.context.trace_id for s in otel.spans()} == {request.get_span_context().trace_id}
    assert dict(inner_span.attributes or {}) == {
        "tokenspy.span.kind": "function", "tokenspy.span_path": "outer/inner", "tokenspy.tag.team": "search"}
    assert dict(calls[0].attributes or {})["tokenspy.span_path"] == "outer/inner"
    # Span times come from the tokenspy span, and the calls sit inside them.
    assert outer_span.start_time is not None and outer_span.end_time is not None
    assert outer_span.start_time <= inner_span.start_time <= calls[0].start_time  # type: ignore[operator]
    assert calls[1].end_time <= outer_span.end_time  # type: ignore[operator]


def test_session_and_agent_tool_spans(otel: Otel) -> None:
    tokenspy.set_price("m", input=1, output=1)
    with tokenspy.session("nightly", tags={"run": 7}) as session:
        agent = Span("planner", "agent", session.span)
        tool = Span("web_search", "tool", agent)
        with use_span(tool):
            tokenspy.record("m", input_tokens=1, output_tokens=1)
        tool.end()
        agent.end()
    nightly, planner, search = otel.span("nightly"), otel.span("planner"), otel.span("web_search")
    assert dict(nightly.attributes or {})["tokenspy.tag.run"] == 7
    assert dict(planner.attributes or {})["gen_ai.operation.name"] == "invoke_agent"
    assert dict(planner.attributes or {})["gen_ai.agent.name"] == "planner"
    assert dict(search.attributes or {})["gen_ai.tool.name"] == "web_search"
    assert search.parent is not None and search.parent.span_id == planner.context.span_id
    assert planner.parent is not None and planner.parent.span_id == nightly.context.span_id
    assert otel.span("chat m").parent.span_id == search.context.span_id  # type: ignore[union-attr]


def test_failing_function_span_has_error_status(otel: Otel) -> None:
    @tokenspy.profile
    def broken() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        broken()
    span = otel.span("broken")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]


def test_a_span_error_quoting_the_answer_exports_no_content(otel: Otel) -> None:
    # pydantic's message quotes the model's answer: with capture_content off it is not exported.
    import pydantic

    class City(pydantic.BaseModel):
        name: str

    @tokenspy.profile
    def extract() -> None:
        City.model_validate_json('{"nam": "SECRET-ANSWER"}')

    with pytest.raises(pydantic.ValidationError):
        extract()
    span = otel.span("extract")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ValidationError"
    [event] = span.events
    assert dict(event.attributes or {}) == {"exception.type": "ValidationError", "exception.message": "ValidationError"}
    assert "SECRET" not in repr((span.status.description, span.attributes, [e.attributes for e in span.events]))


def test_a_provider_error_message_is_exported(otel: Otel) -> None:
    import httpx

    @tokenspy.profile
    def fetch() -> None:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(httpx.ConnectError):
        fetch()
    span = otel.span("fetch")
    assert span.status.description == "connection refused"
    [event] = span.events
    assert dict(event.attributes or {})["exception.message"] == "connection refused"


def test_generator_closed_early_is_not_an_error(otel: Otel) -> None:
    @tokenspy.profile
    def numbers() -> Any:
        yield 1
        yield 2

    gen = numbers()
    next(gen)
    gen.close()
    assert otel.span("numbers").status.status_code is StatusCode.UNSET


def test_stream_finished_after_its_function_returned_joins_that_functions_trace(otel: Otel) -> None:
    @tokenspy.profile
    def make_stream() -> Any:
        return tokenspy.start_call("gpt-4o", prompt="hi")

    call = make_stream()
    call.add_text("streamed later")
    call.set_usage(input_tokens=3, output_tokens=2)
    tokenspy.set_price("gpt-4o", input=1, output=1)
    call.finish()
    function = otel.span("make_stream")
    assert otel.span("chat gpt-4o").parent.span_id == function.context.span_id  # type: ignore[union-attr]


def test_worker_threads_with_explicit_parents_keep_their_parents(otel: Otel) -> None:
    tokenspy.set_price("m", input=1, output=1)
    batch = Span("batch", "function")
    workers = [Span(f"worker-{i}", "step", batch) for i in range(4)]

    def work(i: int) -> None:
        with use_span(workers[i % 4]):
            tokenspy.record("m", input_tokens=i + 1, output_tokens=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.end()
    batch.end()
    by_id = {s.context.span_id: s.name for s in otel.spans()}
    for call in (s for s in otel.spans() if s.name == "chat m"):
        path = dict(call.attributes or {})["tokenspy.span_path"]
        assert call.parent is not None and by_id[call.parent.span_id] == path.split("/")[-1]
    assert len([s for s in otel.spans() if s.name == "chat m"]) == 16


def test_metrics_token_usage_duration_and_cost(otel: Otel) -> None:
    tokenspy.set_price("gpt-4o", input=1, output=2)
    tokenspy.record("gpt-4o", provider="openai", input_tokens=100, output_tokens=10)
    tokenspy.record("gpt-4o", provider="openai", input_tokens=300, output_tokens=30)
    usage = {p.attributes["gen_ai.token.type"]: p for p in otel.metric_points("gen_ai.client.token.usage")}
    assert (usage["input"].count, usage["input"].sum) == (2, 400)
    assert (usage["output"].count, usage["output"].sum) == (2, 40)
    assert dict(usage["input"].attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o", "gen_ai.token.type": "input"}
    # The conventions' advisory buckets are used.
    assert list(usage["input"].explicit_bounds)[:3] == [1, 4, 16]
    (duration,) = otel.metric_points("gen_ai.client.operation.duration")
    assert duration.count == 2 and "error.type" not in duration.attributes
    (cost,) = otel.metric_points("tokenspy.cost")
    assert cost.value == pytest.approx((400 * 1 + 40 * 2) / 1e6)


def test_failed_call_duration_has_error_type(otel: Otel) -> None:
    tokenspy.set_price("m", input=1, output=1)
    tokenspy.start_call("m", prompt="x").fail(ConnectionError("reset"))
    (duration,) = otel.metric_points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "ConnectionError"
    assert otel.metric_points("gen_ai.client.token.usage") == []  # nothing was used


def test_enable_is_idempotent_and_disable_undoes_everything(providers: Otel) -> None:
    tokenspy.set_price("m", input=1, output=1)
    listeners_before = list(span_listeners)
    tracker = default_tracker()
    for _ in range(3):
        enable_otel(tracker, tracer_provider=providers.tracer_provider,
                    meter_provider=providers.meter_provider)
    assert is_enabled() and len(span_listeners) == len(listeners_before) + 1
    with tokenspy.session("s"):
        tokenspy.record("m", input_tokens=1, output_tokens=1)
    assert sorted(s.name for s in providers.spans()) == ["chat m", "s"]  # once each
    disable_otel()
    disable_otel()  # harmless twice
    assert not is_enabled() and span_listeners == listeners_before
    with tokenspy.session("after"):
        tokenspy.record("m", input_tokens=1, output_tokens=1)
    assert len(providers.spans()) == 2


def test_enable_with_other_providers_replaces_the_previous_export(providers: Otel) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tokenspy.set_price("m", input=1, output=1)
    enable_otel(default_tracker(), tracer_provider=providers.tracer_provider,
                meter_provider=providers.meter_provider)
    second_exporter = InMemorySpanExporter()
    second = TracerProvider()
    second.add_span_processor(SimpleSpanProcessor(second_exporter))
    enable_otel(default_tracker(), tracer_provider=second, meter_provider=providers.meter_provider)
    tokenspy.record("m", input_tokens=1, output_tokens=1)
    assert providers.spans() == [] and len(second_exporter.get_finished_spans()) == 1
    disable_otel()
    second.shutdown()


def test_disable_ends_spans_still_open_as_incomplete(otel: Otel) -> None:
    span = Span("long job", "function")
    disable_otel()
    (exported,) = otel.spans()
    assert exported.name == "long job" and dict(exported.attributes or {})["tokenspy.incomplete"] is True
    span.end()  # after disable: nothing more happens
    assert len(otel.spans()) == 1


def test_span_lost_by_its_adapter_ends_incomplete_after_it_is_collected(otel: Otel) -> None:
    import gc

    Span("forgotten", "chain")
    gc.collect()
    assert otel.spans() == []  # never ended from inside the garbage collector
    Span("next", "chain").end()
    assert dict(otel.span("forgotten").attributes or {})["tokenspy.incomplete"] is True


def test_init_otel_true_uses_the_global_providers(providers: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import metrics, trace

    # Stand-ins for globals an application would set, undone by monkeypatch after the test.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: providers.tracer_provider)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: providers.meter_provider)
    tokenspy.set_price("m", input=1, output=1)
    tokenspy.init(otel=True)
    tokenspy.record("m", input_tokens=1, output_tokens=1)
    assert [s.name for s in providers.spans()] == ["chat m"]


def test_missing_opentelemetry_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'tokenspy\[otel\]'"):
        tokenspy.init(otel=True)
    assert not is_enabled()


@pytest.mark.parametrize(("provider", "expected"), [
    ("openai", "openai"), ("anthropic", "anthropic"), ("azure_openai", "azure.ai.openai"),
    ("bedrock", "aws.bedrock"), ("google_vertexai", "gcp.vertex_ai"), ("google_genai", "gcp.gen_ai"),
    ("mistralai", "mistral_ai"), ("Groq", "groq"), (None, None),
])
def test_provider_names_follow_the_conventions(provider: str | None, expected: str | None) -> None:
    tokenspy.set_price("m", input=1, output=1)
    record = tokenspy.record("m", input_tokens=1, output_tokens=1, provider=provider)
    assert record is not None
    assert call_attributes(record).get("gen_ai.provider.name") == expected


def test_gen_ai_system_has_its_own_well_known_value_where_it_differs() -> None:
    tokenspy.set_price("m", input=1, output=1)
    record = tokenspy.record("m", input_tokens=1, output_tokens=1, provider="x-ai")
    assert record is not None
    attributes = call_attributes(record)
    assert (attributes["gen_ai.provider.name"], attributes["gen_ai.system"]) == ("x_ai", "xai")
