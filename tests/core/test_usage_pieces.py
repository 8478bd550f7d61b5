"""Usage reported in pieces through the public `set_usage`, and estimates beside reported subsets."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import MessageDeltaUsage
from anthropic.types import Usage as AnthropicUsage

import tokenspy
from tokenspy_core.tokenizer import count_tokens

TEXT = "one two three"


def test_openai_pieces_each_reporting_one_count_combine() -> None:
    call = tokenspy.start_call("gpt-4o")
    call.set_usage({"prompt_tokens": 7})
    call.set_usage({"completion_tokens": 5})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (7, 5, "provider")


def test_openai_completion_count_alone_keeps_it_and_estimates_the_prompt() -> None:
    call = tokenspy.start_call("gpt-4o", prompt="hello there")
    call.set_usage({"completion_tokens": 7})
    record = call.finish()
    assert record is not None
    assert record.output_tokens == 7
    assert record.usage_source == "mixed"


def test_openai_prompt_count_alone_estimates_the_streamed_output() -> None:
    call = tokenspy.start_call("gpt-4o")
    call.add_text(TEXT)
    call.set_usage({"prompt_tokens": 7})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens) == (7, count_tokens(TEXT, "gpt-4o"))
    assert record.output_tokens == 3
    assert record.usage_source == "mixed"


def test_an_embeddings_report_has_no_output_to_estimate() -> None:
    call = tokenspy.start_call("text-embedding-3-small", stream=False)
    call.set_usage({"prompt_tokens": 8, "total_tokens": 8})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (8, 0, "provider")


def _anthropic_start_then_delta(delta: object) -> tokenspy.CallRecord:
    call = tokenspy.start_call("claude-3-5-sonnet-20241022", provider="anthropic")
    call.set_usage(AnthropicUsage(input_tokens=10, output_tokens=1, cache_read_input_tokens=100,
                                  cache_creation_input_tokens=50))
    call.set_usage(delta)
    record = call.finish()
    assert record is not None
    return record


@pytest.mark.parametrize("delta", [
    MessageDeltaUsage(input_tokens=10, output_tokens=40),  # an SDK object whose cache fields are None
    {"input_tokens": 10, "output_tokens": 40},  # a dict, on a call started with provider="anthropic"
    {"input_tokens": 10, "cache_read_input_tokens": None, "output_tokens": 40},  # a dumped SDK object
], ids=["sdk-object", "dict", "dumped"])
def test_anthropic_delta_repeating_the_raw_input_keeps_the_cache_tokens_in_it(delta: object) -> None:
    record = _anthropic_start_then_delta(delta)
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens, record.output_tokens) == (
        160, 100, 50, 40)
    # claude-3-5-sonnet: $3/M input, $0.30/M cache read, $3.75/M cache write, $15/M output
    expected = (10 * Decimal(3) + 100 * Decimal("0.3") + 50 * Decimal("3.75") + 40 * 15) / 10**6
    assert record.cost == expected


def test_anthropic_delta_with_the_cache_fields_takes_them() -> None:
    record = _anthropic_start_then_delta(MessageDeltaUsage(input_tokens=10, output_tokens=40,
                                                           cache_read_input_tokens=100,
                                                           cache_creation_input_tokens=50))
    assert (record.input_tokens, record.output_tokens) == (160, 40)


def test_an_estimated_output_adds_the_reported_reasoning() -> None:
    call = tokenspy.start_call("gpt-4o")
    call.add_text("hi")
    call.set_usage(input_tokens=5, reasoning_tokens=500)
    record = call.finish()
    assert record is not None
    assert (record.output_tokens, record.reasoning_tokens) == (count_tokens("hi", "gpt-4o") + 500, 500)


def test_an_estimated_input_is_never_below_the_reported_cache_tokens() -> None:
    call = tokenspy.start_call("gpt-4o", prompt="hi")
    call.set_usage(cached_input_tokens=1000, output_tokens=3)
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.cached_input_tokens) == (1000, 1000)


def test_set_usage_refuses_a_list() -> None:
    call = tokenspy.start_call("gpt-4o")
    with pytest.raises(TypeError, match="usage"):
        call.set_usage([7, 3])
    call.finish()


def test_a_usage_dict_with_no_known_field_is_said_once() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            call = tokenspy.start_call("gpt-4o")
            call.set_usage({"input_tokns": 7, "output_token": 3})
            call.finish()
    said = [w for w in caught if "no field tokenspy knows" in str(w.message)]
    assert len(said) == 1
    assert "input_tokns" in str(said[0].message)


def test_fail_refuses_what_is_neither_an_exception_nor_a_message() -> None:
    call = tokenspy.start_call("gpt-4o")
    with pytest.raises(TypeError, match="fail"):
        call.fail(123)  # type: ignore[arg-type]
    record = call.fail("timeout")
    assert record is not None and record.error == "timeout"


def test_a_bedrock_converse_usage_adds_its_cache_to_the_input() -> None:
    call = tokenspy.start_call("claude-3-5-sonnet-20241022", provider="anthropic", stream=False)
    call.set_usage({"inputTokens": 10, "outputTokens": 5, "totalTokens": 115, "cacheReadInputTokens": 100})
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (110, 100, 5)
    assert record.usage_source == "provider"


def test_a_refused_add_text_is_no_first_token() -> None:
    call = tokenspy.start_call("gpt-4o")
    with pytest.raises(TypeError, match="add_text"):
        call.add_text(5)  # type: ignore[arg-type]
    call.set_usage(input_tokens=1, output_tokens=0)
    record = call.finish()
    assert record is not None and record.ttft_s is None


@pytest.mark.parametrize("first, then", [
    ({"inputTokens": 50, "outputTokens": 1, "cacheReadInputTokens": 30, "cacheWriteInputTokens": 20},
     {"inputTokens": 50, "outputTokens": 15}),
    ({"input_tokens": 50, "output_tokens": 1, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 20},
     {"input_tokens": 50, "output_tokens": 15}),
], ids=["camelCase", "snake_case"])
def test_bedrock_pieces_keep_the_cache_in_the_input(first: dict[str, int], then: dict[str, int]) -> None:
    call = tokenspy.start_call("claude-3-5-sonnet-20241022", provider="bedrock")
    call.set_usage(first)
    call.set_usage(then)
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens, record.output_tokens) == (
        100, 30, 20, 15)


def test_an_estimate_behind_a_gateway_alias_counts_with_the_requested_models_encoding() -> None:
    tokenspy.set_price("gpt-4", input=30, output=60)
    text = "Tokenizers differ: cl100k_base and o200k_base split this sentence differently, naïvely."
    call = tokenspy.start_call("gpt-4")
    call.set_model("gw-alias")  # a served name tiktoken does not know
    call.add_text(text)
    record = call.abort()
    assert record is not None
    assert record.output_tokens == count_tokens(text, "gpt-4") != count_tokens(text, "gpt-4o")


@pytest.mark.parametrize("pieces", [
    [{"inputTokens": 100, "outputTokens": 50}, {"cacheReadInputTokens": 1000, "cacheWriteInputTokens": 200}],
    [{"cacheReadInputTokens": 1000, "cacheWriteInputTokens": 200}, {"inputTokens": 100, "outputTokens": 50}],
], ids=["cache-last", "cache-first"])
def test_a_bedrock_piece_with_only_the_cache_counts_adds_them_to_the_input(pieces: list[dict[str, int]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key is a known one: no warning
        call = tokenspy.start_call("claude-3-5-sonnet-20241022", provider="bedrock")
        for piece in pieces:
            call.set_usage(piece)
        record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens, record.output_tokens) == (
        1300, 1000, 200, 50)


def test_anthropic_dict_pieces_on_a_call_started_without_a_provider() -> None:
    # The first piece's shape says Anthropic: the delta repeating the raw input keeps the cache in it.
    # (It raised "cached ... cannot exceed input_tokens" into the caller's code, and lost the output.)
    call = tokenspy.start_call("claude-3-5-sonnet-20241022")
    call.set_usage({"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1})
    call.set_usage({"input_tokens": 10, "output_tokens": 50})
    record = call.finish()
    assert record is not None and record.provider == "anthropic"
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (110, 100, 50)


def test_fields_beside_a_usage_object_are_checked_against_the_merged_report() -> None:
    call = tokenspy.start_call("gpt-4o")
    call.set_usage({"prompt_tokens": 100, "completion_tokens": 1})
    call.set_usage({"prompt_tokens": 300, "completion_tokens": 20}, cached_input_tokens=200)  # was refused
    record = call.finish()
    assert record is not None and (record.input_tokens, record.cached_input_tokens, record.output_tokens) == (
        300, 200, 20)


@pytest.mark.parametrize("usage", [
    {"input_tokens": 100, "output_tokens": 10, "cache_write_1h_tokens": 50},
    {"input_tokens": 100, "output_tokens": 10, "cache_creation": {"ephemeral_1h_input_tokens": 50}},
], ids=["fields-dict", "anthropic-shape"])
def test_one_hour_cache_writes_over_all_cache_writes_are_refused(usage: dict[str, object]) -> None:
    call = tokenspy.start_call("claude-3-5-sonnet-20241022")
    with pytest.raises(ValueError, match="cache_write_1h_tokens are part of cache_write_tokens"):
        call.set_usage(usage)
    call.abort()


def test_pieces_reported_from_several_threads_are_all_kept() -> None:
    # Merged into a copy put back, a piece another thread reported meanwhile was lost (a silent 0).
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            call = tokenspy.start_call("gpt-4o")
            call.set_usage(input_tokens=1000, output_tokens=200)
            pieces = ({"cached_input_tokens": 300}, {"reasoning_tokens": 50}, {"cache_write_tokens": 100})

            def report(call: Any, piece: dict[str, int]) -> None:
                for _ in range(20):
                    call.set_usage(**piece)

            threads = [threading.Thread(target=report, args=(call, piece)) for piece in pieces]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            record = call.finish()
            assert record is not None
            assert (record.cached_input_tokens, record.reasoning_tokens, record.cache_write_tokens) == (300, 50, 100)
    finally:
        sys.setswitchinterval(interval)
