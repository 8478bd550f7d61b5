"""The reconciliation state machine: finished / aborted / failed with provider, estimated, mixed usage."""

from __future__ import annotations

import copy
import gc

import pytest

import tokenspy
from tokenspy_core import Call, Tracker, default_tracker, start_call
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

PROMPT = [{"role": "user", "content": "Tell me a joke about cats, please."}]
REPLY = ["Why ", "did ", "the ", "cat ", "sit ", "on ", "the ", "computer?"]


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


def test_finished_with_provider_usage(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", provider="openai", prompt=PROMPT, streamed=True)
    for piece in REPLY:
        call.add_text(piece)
    call.set_usage({"prompt_tokens": 300, "completion_tokens": 20,
                    "prompt_tokens_details": {"cached_tokens": 100}})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens) == (300, 20, 100)
    assert record.usage_source == "provider"
    assert record.partial is False and record.status == "finished" and record.error is None
    # gpt-4o: 200 uncached * $2.50/M + 100 cached * $1.25/M + 20 * $10/M
    assert str(record.cost) == "0.000825000000000"
    assert record.ttft_s is not None and record.latency_s >= record.ttft_s


def test_aborted_stream_without_usage_is_estimated_and_partial(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", prompt=PROMPT, streamed=True)
    for piece in REPLY[:3]:
        call.add_text(piece)
    record = call.abort()
    assert record is not None
    assert record.partial is True and record.status == "aborted"
    assert record.usage_source == "estimated"
    assert record.input_tokens == count_message_tokens(PROMPT, "gpt-4o")
    assert record.output_tokens == count_tokens("".join(REPLY[:3]), "gpt-4o")
    assert record.estimated_fields == ("input_tokens", "output_tokens")
    assert record.cost_femto == record.input_tokens * 2_500_000_000 + record.output_tokens * 10_000_000_000


def test_text_appender_marks_the_first_token_and_feeds_the_estimate() -> None:
    clock = iter([0.0, 0.25, 1.0, 9.0])  # start, first text, end, (unused)
    call = Call(Tracker(clock=lambda: next(clock)), "gpt-4o", prompt=PROMPT, streamed=True)
    append = call.text_appender()
    for piece in REPLY[:3]:
        append(piece)
    record = call.abort()
    assert record is not None and record.ttft_s == 0.25 and record.latency_s == 1.0
    assert record.output_tokens == count_tokens("".join(REPLY[:3]), "gpt-4o")
    late = call.text_appender()  # after the end: text goes nowhere
    late("more")
    assert call.record is record and record.output_tokens == count_tokens("".join(REPLY[:3]), "gpt-4o")


def test_an_embedding_without_usage_estimates_only_its_input(tracker: Tracker) -> None:
    call = Call(tracker, "text-embedding-3-small", prompt="hello world", operation="embeddings")
    record = call.finish()
    assert record is not None
    assert record.estimated_fields == ("input_tokens",) and record.usage_source == "estimated"
    assert (record.input_tokens, record.output_tokens) == (count_tokens("hello world", "text-embedding-3-small"), 0)


def test_aborted_after_anthropic_message_start_is_mixed(tracker: Tracker) -> None:
    # An adapter passes message_start's input and cache numbers (its output_tokens=1 is a placeholder).
    call = Call(tracker, "claude-3-5-sonnet-20241022", provider="anthropic", prompt=PROMPT, streamed=True)
    call.set_usage({"input_tokens": 202, "cache_read_input_tokens": 61, "cache_creation_input_tokens": 51})
    call.add_text("Because it wanted")
    record = call.abort()
    assert record is not None
    assert record.input_tokens == 314 and record.cached_input_tokens == 61 and record.cache_write_tokens == 51
    assert record.output_tokens == count_tokens("Because it wanted", "claude-3-5-sonnet-20241022")
    assert record.usage_source == "mixed" and record.partial is True
    # $3/M uncached input, $0.30/M cache read, $3.75/M cache write, $15/M output
    assert record.cost_femto == (202 * 3_000_000_000 + 61 * 300_000_000 + 51 * 3_750_000_000
                                 + record.output_tokens * 15_000_000_000)


def test_mixed_when_only_input_was_reported(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", prompt=PROMPT, streamed=True)
    call.set_usage(input_tokens=50)
    call.add_text("Because")
    record = call.abort()
    assert record is not None
    assert record.usage_source == "mixed"
    assert record.input_tokens == 50 and record.output_tokens == count_tokens("Because", "gpt-4o")
    assert record.estimated_fields == ("output_tokens",)


def test_failed_mid_stream_counts_what_was_consumed(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", prompt=PROMPT, streamed=True)
    call.add_text("Why did")
    record = call.fail(ConnectionResetError("connection reset"))
    assert record is not None
    assert record.status == "failed" and record.partial is True
    assert record.error == "ConnectionResetError: connection reset"
    assert record.input_tokens == count_message_tokens(PROMPT, "gpt-4o")
    assert record.output_tokens == count_tokens("Why did", "gpt-4o")


def test_failed_before_any_response_bills_nothing(tracker: Tracker) -> None:
    record = Call(tracker, "gpt-4o", prompt=PROMPT).fail(RuntimeError("429 Too Many Requests"))
    assert record is not None
    assert (record.input_tokens, record.output_tokens, record.cost_femto) == (0, 0, 0)
    assert record.partial is False and record.status == "failed"


def test_cumulative_reports_are_not_double_counted(tracker: Tracker) -> None:
    call = Call(tracker, "claude-3-5-sonnet-20241022", provider="anthropic", streamed=True)
    call.set_usage({"input_tokens": 202, "output_tokens": 1, "cache_read_input_tokens": 61,
                    "cache_creation_input_tokens": 51})
    call.set_usage({"output_tokens": 10})
    call.set_usage({"output_tokens": 32, "input_tokens": 202, "cache_read_input_tokens": 61,
                    "cache_creation_input_tokens": 51})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens) == (314, 32)
    assert tracker.totals().total_tokens == 346


def test_ending_twice_is_a_noop(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o")
    call.set_usage(input_tokens=1, output_tokens=1)
    assert call.finish() is not None
    assert call.abort() is None and call.fail(ValueError()) is None and call.finish() is None
    call.add_text("late")
    call.set_usage(input_tokens=999)
    assert tracker.totals().calls == 1 and tracker.totals().input_tokens == 1


def test_streamed_text_is_tokenized_once_at_the_end(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenspy_core.call as call_module

    seen: list[str] = []

    def counting(text: str, model: str | None = None) -> int:
        seen.append(text)
        return count_tokens(text, model)

    monkeypatch.setattr(call_module, "count_tokens", counting)
    call = Call(tracker, "gpt-4o", streamed=True)
    for piece in REPLY:
        call.add_text(piece)
    call.set_usage(input_tokens=10)
    call.finish()
    assert seen == ["".join(REPLY)]


def test_non_stream_response_text_estimates_output(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", prompt="Hello there")
    call.set_response_text(lambda: "General Kenobi")
    record = call.finish()
    assert record is not None
    assert record.output_tokens == count_tokens("General Kenobi", "gpt-4o")
    assert record.input_tokens == count_tokens("Hello there", "gpt-4o")


def test_served_model_is_priced_and_reported(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", provider="openai")
    call.set_model("gpt-4o-mini-2024-07-18")
    record = call.finish({"prompt_tokens": 1_000_000, "completion_tokens": 0})
    assert record is not None
    assert record.model == "gpt-4o-mini-2024-07-18" and record.request_model == "gpt-4o"
    assert str(record.cost) == "0.150000000000000"


def test_cache_hit_costs_nothing(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o")
    call.set_cache_hit()
    record = call.finish({"prompt_tokens": 100, "completion_tokens": 10})
    assert record is not None and record.cost_femto == 0 and record.cache_hit is True


def test_garbage_collected_active_call_ends_aborted(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", streamed=True)
    call.add_text("half a sentence")
    del call
    gc.collect()
    (record,) = tracker.calls()
    assert record.partial is True and record.status == "aborted"


def test_context_manager_ends_by_outcome(tracker: Tracker) -> None:
    with Call(tracker, "gpt-4o") as ok:
        ok.set_usage(input_tokens=1, output_tokens=1)
    with pytest.raises(ValueError), Call(tracker, "gpt-4o") as bad:
        bad.add_text("x")
        raise ValueError("boom")

    def gen() -> object:
        with Call(tracker, "gpt-4o") as c:
            c.add_text("y")
            yield 1

    g = gen()
    next(g)
    g.close()
    statuses = [r.status for r in tracker.calls()]
    assert statuses == ["finished", "failed", "aborted"]


def test_inner_layer_merges_into_active_outer_call() -> None:
    outer = start_call(None, "gpt-4o", provider="openai", streamed=True)
    assert isinstance(outer, Call)
    outer.activate()
    inner = start_call(None, "gpt-4o", provider="openai", merge=True)
    assert inner.merged
    inner.set_usage({"prompt_tokens": 12, "completion_tokens": 3})
    inner.set_model("gpt-4o-2024-08-06")
    inner.finish()
    # A second SDK call under the same outer call is a separate provider call: its own record.
    second = start_call(None, "gpt-4o", merge=True)
    assert not second.merged
    second.finish({"prompt_tokens": 1, "completion_tokens": 1})
    outer.add_text("hello")
    outer.finish()
    records = default_tracker().calls()
    assert [(r.model, r.input_tokens, r.output_tokens, r.usage_source) for r in records] == [
        ("gpt-4o", 1, 1, "provider"), ("gpt-4o-2024-08-06", 12, 3, "provider")]


def test_outer_call_deactivates_on_end() -> None:
    from tokenspy_core import active_call

    outer = start_call(None, "gpt-4o")
    assert isinstance(outer, Call)
    outer.activate()
    assert active_call() is outer
    outer.abort()
    assert active_call() is None
    assert not start_call(None, "gpt-4o", merge=True).merged


def test_manual_start_call_facade() -> None:
    call = tokenspy.start_call("gpt-4o", provider="openai", prompt="Say hi")
    call.add_text("Hi!")
    call.set_usage(input_tokens=9, output_tokens=2)
    call.finish()
    (record,) = tokenspy.calls()
    assert (record.input_tokens, record.output_tokens, record.streamed, record.provider) == (9, 2, True, "openai")


class _QuotingError(ValueError):
    """Like pydantic's ValidationError: its message quotes the model's answer."""


def test_failed_record_keeps_no_content_from_the_error_message(tracker: Tracker) -> None:
    record = Call(tracker, "gpt-4o", prompt=PROMPT).fail(_QuotingError("input_value='Patient SSN 123-45-6789'"))
    assert record is not None and record.error == "_QuotingError"


def test_failed_record_keeps_provider_and_network_messages(tracker: Tracker) -> None:
    class StatusError(Exception):
        status_code = 429

    # Its message may quote the request (a gateway echoing the body): only the status without a body to read.
    record = Call(tracker, "gpt-4o").fail(StatusError("Error code: 429 - rate limited"))
    assert record is not None and record.error == "StatusError: Error code: 429"
    record = Call(tracker, "gpt-4o").fail(TimeoutError("read timed out"))
    assert record is not None and record.error == "TimeoutError: read timed out"


def test_failed_record_keeps_the_message_when_content_is_captured(tracker: Tracker) -> None:
    tokenspy.init(capture_content=True)
    try:
        record = Call(tracker, "gpt-4o").fail(_QuotingError("input_value='the answer'"))
    finally:
        tokenspy.init()
    assert record is not None and record.error == "_QuotingError: input_value='the answer'"


@pytest.mark.parametrize(("fields", "error"), [
    ({"input_tokens": "120"}, TypeError), ({"input_tokens": 3.7}, TypeError), ({"output_tokens": True}, TypeError),
    ({"input_tokens": -50}, ValueError), ({"prompt_tokens": 100}, TypeError),
])
def test_set_usage_refuses_bad_numbers_at_the_call(tracker: Tracker, fields: dict[str, object],
                                                    error: type[Exception]) -> None:
    call = Call(tracker, "gpt-4o")
    name = next(iter(fields))
    with pytest.raises(error, match=name):
        call.set_usage(**fields)  # type: ignore[arg-type]
    record = call.finish()  # the call itself is still recorded, with nothing from the bad report
    assert record is not None and record.input_tokens == 0 and record.status == "finished"


@pytest.mark.parametrize(("reports", "match"), [
    ([{"input_tokens": 5, "output_tokens": 3, "cached_input_tokens": 50}], "part of input_tokens"),
    ([{"input_tokens": 5, "cache_write_tokens": 4, "cached_input_tokens": 2}], "part of input_tokens"),
    ([{"input_tokens": 5}, {"cached_input_tokens": 6}], "part of input_tokens"),  # across two reports
    ([{"output_tokens": 3, "reasoning_tokens": 10}], "part of output_tokens"),
    ([{"cache_write_tokens": 2, "cache_write_1h_tokens": 3}], "part of cache_write_tokens"),
])
def test_set_usage_refuses_subsets_larger_than_their_whole(tracker: Tracker, reports: list[dict[str, int]],
                                                           match: str) -> None:
    # What `record()` refuses, `set_usage` refuses too: priced, 50 cached tokens on a 5-token prompt cost
    # more than no cache at all.
    call = Call(tracker, "gpt-4o")
    with pytest.raises(ValueError, match=match):
        for report in reports:
            call.set_usage(**report)  # type: ignore[arg-type]
    record = call.finish()
    assert record is not None and record.cached_input_tokens <= record.input_tokens
    assert record.reasoning_tokens <= record.output_tokens


def test_set_usage_refuses_subsets_given_beside_a_usage_object(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o")
    with pytest.raises(ValueError, match="part of input_tokens"):
        call.set_usage({"input_tokens": 5, "output_tokens": 1}, cached_input_tokens=100)
    call.set_usage({"input_tokens": 500, "output_tokens": 1}, cached_input_tokens=100)
    record = call.finish()
    assert record is not None and (record.input_tokens, record.cached_input_tokens) == (500, 100)


@pytest.mark.parametrize(("usage", "error", "match"), [
    ({"input_tokens": -500, "output_tokens": 3}, ValueError, "-500"),
    ({"prompt_tokens": "ten", "completion_tokens": 2}, TypeError, "'ten'"),
    ({"input_tokens": 1.9, "output_tokens": 2}, TypeError, "1.9"),
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": -1}}, ValueError, "-1"),
    (42, TypeError, "usage object or dict"), ("oops", TypeError, "usage object or dict"),
])
def test_set_usage_refuses_a_bad_usage_dict_at_the_call(tracker: Tracker, usage: object, error: type[Exception],
                                                        match: str) -> None:
    call = Call(tracker, "gpt-4o")
    with pytest.raises(error, match=match):
        call.set_usage(usage)
    record = call.finish()
    assert record is not None and record.input_tokens == 0 and record.cost_femto == 0


def test_set_usage_takes_a_providers_dict_with_non_count_fields(tracker: Tracker) -> None:
    call = Call(tracker, "claude-sonnet-4-5", provider="anthropic")
    call.set_usage({"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 3, "service_tier": "standard",
                    "server_tool_use": {"web_search_requests": 0}})
    record = call.finish()
    assert record is not None and (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (15, 5, 3)


def test_add_text_refuses_what_is_not_text(tracker: Tracker) -> None:
    call = Call(tracker, "gpt-4o", prompt=PROMPT, streamed=True)
    call.add_text("Why ")
    with pytest.raises(TypeError, match="bytes"):
        call.add_text(b"did")  # type: ignore[arg-type]
    record = call.abort()  # recorded with the text it took
    assert record is not None and record.output_tokens == count_tokens("Why ", "gpt-4o")


def test_a_record_has_its_own_tags_dict(tracker: Tracker) -> None:
    tokenspy.init(tags={"team": "search"})
    try:
        first = Call(tracker, "gpt-4o").finish()
        assert first is not None and first.tags == {"team": "search"}
        first.tags["user"] = "alice"  # type: ignore[index]
        second = Call(tracker, "gpt-4o").finish()
    finally:
        tokenspy.init()
    assert second is not None and second.tags == {"team": "search"}
    untagged = Call(tracker, "gpt-4o").finish()
    assert untagged is not None and untagged.tags == {}
    with pytest.raises(TypeError, match="no tags"):
        untagged.tags["user"] = "alice"  # type: ignore[index]
    assert copy.deepcopy(untagged).tags == {} and type(copy.deepcopy(untagged).tags) is dict


def test_latency_excludes_tokenspys_own_estimate(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenspy_core.call as call_module

    ticks = iter([10.0, 10.5, 99.0, 99.0, 99.0])  # start, end; later clock reads would be tokenspy's own work
    monkeypatch.setattr(tracker, "clock", lambda: next(ticks))

    def slow_count(prompt: object, model: object, provider: object = None) -> int:
        tracker.clock()  # time passes while estimating
        return 7

    monkeypatch.setattr(call_module, "count_prompt_tokens", slow_count)
    call = Call(tracker, "gpt-4o", prompt=PROMPT)
    call.set_usage(output_tokens=3)
    record = call.finish()
    assert record is not None and record.input_tokens == 7 and record.latency_s == 0.5
