"""OTel test providers: in-memory span exporter and metric reader, never the global providers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_harness import Otel

from tokenspy.otel import disable_otel, enable_otel
from tokenspy_core import default_tracker


@pytest.fixture
def providers() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, meter_provider, exporter, reader)
    disable_otel()
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def otel(providers: Otel) -> Otel:
    """Export the default tracker to the in-memory providers for the test."""
    enable_otel(default_tracker(), tracer_provider=providers.tracer_provider,
                meter_provider=providers.meter_provider)
    return providers
