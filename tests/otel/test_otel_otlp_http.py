"""End to end over the wire: the OTLP/HTTP exporters to a receiver on 127.0.0.1 that decodes protobuf."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tokenspy
from tokenspy.otel import disable_otel, enable_otel
from tokenspy_core import default_tracker


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        self.server.content_types.add(self.headers.get("Content-Type", ""))
        reply: Any
        if self.path == "/v1/traces":
            self.server.traces.append(ExportTraceServiceRequest.FromString(body))
            reply = ExportTraceServiceResponse()
        elif self.path == "/v1/metrics":
            self.server.metrics.append(ExportMetricsServiceRequest.FromString(body))
            reply = ExportMetricsServiceResponse()
        else:
            self.send_error(404)
            return
        payload = reply.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Receiver]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy set in the environment must not intercept
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def test_otlp_http_export_of_spans_and_metrics(receiver: _Receiver) -> None:
    base = f"http://127.0.0.1:{receiver.server_address[1]}"
    resource = Resource.create({"service.name": "batch-worker-7"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                                           export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    enable_otel(default_tracker(), tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        tokenspy.set_price("claude-sonnet-4", input=3, output=15, cached_input=0.3, cache_write=3.75)
        with tokenspy.session("nightly-eval", tags={"dataset": "v2"}):
            tokenspy.record("claude-sonnet-4", provider="anthropic", input_tokens=12_000, output_tokens=800,
                            cached_input_tokens=10_000, cache_write_tokens=1_000)
        assert tracer_provider.force_flush() and meter_provider.force_flush()
    finally:
        disable_otel()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    assert receiver.content_types == {"application/x-protobuf"}
    spans = {span.name: (span, _attrs(rs.resource.attributes))
             for request in receiver.traces for rs in request.resource_spans
             for ss in rs.scope_spans for span in ss.spans}
    assert set(spans) == {"nightly-eval", "chat claude-sonnet-4"}
    call, call_resource = spans["chat claude-sonnet-4"]
    session, _ = spans["nightly-eval"]
    assert call_resource["service.name"] == "batch-worker-7"
    assert call.parent_span_id == session.span_id and call.trace_id == session.trace_id
    attrs = _attrs(call.attributes)
    # 1,000 uncached * 3 + 10,000 cached * 0.3 + 1,000 written * 3.75 + 800 * 15, per million tokens
    assert attrs.pop("tokenspy.cost_usd") == pytest.approx(0.02175)
    assert attrs == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4", "gen_ai.response.model": "claude-sonnet-4",
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": 12_000, "gen_ai.usage.output_tokens": 800,
        "gen_ai.usage.cache_read.input_tokens": 10_000, "gen_ai.usage.cache_creation.input_tokens": 1_000,
        "tokenspy.priced": True, "tokenspy.partial": False, "tokenspy.usage_source": "provider",
        "tokenspy.status": "finished", "tokenspy.span_path": "nightly-eval", "tokenspy.tag.dataset": "v2",
    }
    assert _attrs(session.attributes) == {
        "tokenspy.span.kind": "session", "tokenspy.span_path": "nightly-eval", "tokenspy.tag.dataset": "v2"}
    assert call.kind == call.SPAN_KIND_CLIENT

    metrics = {m.name: m for request in receiver.metrics for rm in request.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "tokenspy.cost"} <= set(metrics)
    usage = {_attrs(p.attributes)["gen_ai.token.type"]: p.sum
             for p in metrics["gen_ai.client.token.usage"].histogram.data_points}
    assert usage == {"input": 12_000, "output": 800}
    (cost,) = metrics["tokenspy.cost"].sum.data_points
    assert cost.as_double == pytest.approx(0.02175) and metrics["tokenspy.cost"].unit == "{USD}"
