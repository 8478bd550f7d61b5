"""OpenTelemetry export of real SDK calls (anthropic against the fake provider): parents, failures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import pydantic
import pytest
from opentelemetry.trace import StatusCode
from otel_harness import Otel

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy.testing.fixtures import fake_provider  # noqa: F401  (makes the fixture available here)
from tokenspy_core import config

HAIKU = "claude-haiku-4-5"
ARGS: dict[str, Any] = {"model": HAIKU, "max_tokens": 256, "messages": [{"role": "user", "content": "Tell me a joke"}]}


@pytest.fixture
def ant(fake_provider: FakeProvider) -> anthropic.Anthropic:  # noqa: F811
    client = anthropic.Anthropic(base_url=fake_provider.anthropic_base_url, api_key="sk-ant-fake", max_retries=0)
    return tokenspy.observe(client)


def _parent_name(otel: Otel, span_name: str) -> list[str | None]:
    names = {s.context.span_id: s.name for s in otel.spans()}
    return [names.get(s.parent.span_id) if s.parent is not None else None
            for s in sorted(otel.spans(), key=lambda s: s.start_time or 0) if s.name == span_name]


def test_stream_made_under_a_request_span_stays_its_child_wherever_it_is_read(
        otel: Otel, ant: anthropic.Anthropic) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request A") as request_a:
        read_under_b = ant.messages.create(**ARGS, stream=True)
        read_in_pool = ant.messages.create(**ARGS, stream=True)
    made_outside = ant.messages.create(**ARGS, stream=True)
    with tracer.start_as_current_span("request B"):
        for _ in read_under_b:
            pass
        for _ in made_outside:
            pass
    with ThreadPoolExecutor(1) as pool:  # a worker thread: no OTel context at all
        pool.submit(lambda: list(read_in_pool)).result()
    # Parented where each call was made, not where its stream ended: A, A, and a root of its own.
    assert _parent_name(otel, f"chat {HAIKU}") == ["request A", "request A", None]
    a_trace = request_a.get_span_context().trace_id
    assert [s.context.trace_id == a_trace for s in sorted(otel.spans(), key=lambda s: s.start_time or 0)
            if s.name == f"chat {HAIKU}"] == [True, True, False]
    assert [r.status for r in tokenspy.calls()] == ["finished"] * 3


@pytest.mark.parametrize(("flag", "error", "answered"), [
    ("midstream", anthropic.APIStatusError, True),  # message_start and text arrived, then an error event
    ("http429", anthropic.RateLimitError, False),  # no answer at all
])
def test_failed_call_names_its_response_model_only_if_an_answer_started(
        otel: Otel, ant: anthropic.Anthropic, fake_provider: FakeProvider,  # noqa: F811
        flag: str, error: type[Exception], answered: bool) -> None:
    fake_provider.set_flags(flag)
    with pytest.raises(error):
        for _ in ant.messages.create(**ARGS, stream=True):
            pass
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.model) == ("failed", answered, HAIKU)
    (span,) = otel.spans()
    attrs = dict(span.attributes or {})
    assert attrs.get("gen_ai.response.model") == (HAIKU if answered else None)
    assert attrs["gen_ai.request.model"] == HAIKU and attrs["tokenspy.partial"] is answered
    # The metrics of a call that was answered go in the same series as its model's other calls.
    (duration,) = otel.metric_points("gen_ai.client.operation.duration")
    assert dict(duration.attributes).get("gen_ai.response.model") == (HAIKU if answered else None)
    assert duration.attributes["error.type"] == error.__name__


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_capture_content_never_exports_the_answer_in_a_failed_calls_status(
        otel: Otel, ant: anthropic.Anthropic, fake_provider: FakeProvider,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "capture_content", True)
    fake_provider.reply = '{"name": "SECRET-ANSWER", "age": "not a number"}'
    with pytest.raises(pydantic.ValidationError):
        ant.messages.parse(**ARGS, output_format=Person)
    (record,) = tokenspy.calls()
    # The record keeps the message (content capture is on) ...
    assert record.error is not None and "not a number" in record.error
    # ... the exported span does not: its status text is the exception's type alone.
    (span,) = otel.spans()
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "ValidationError"
    assert dict(span.attributes or {})["error.type"] == "ValidationError"
    exported = repr((span.status.description, dict(span.attributes or {}), [e.attributes for e in span.events]))
    assert "SECRET" not in exported and "not a number" not in exported


def test_without_content_capture_a_failed_calls_status_keeps_the_provider_message(
        otel: Otel, ant: anthropic.Anthropic, fake_provider: FakeProvider) -> None:  # noqa: F811
    fake_provider.set_flags("http429")
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.create(**ARGS)
    (record,) = tokenspy.calls()
    (span,) = otel.spans()
    assert record.error is not None and record.error.startswith("RateLimitError: Error code: 429")
    assert span.status.description == record.error
