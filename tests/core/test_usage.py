"""Each provider's usage shape normalizes to the same semantics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenspy_core import (
    UsageReport,
    usage_from_anthropic,
    usage_from_any,
    usage_from_gemini,
    usage_from_langchain,
    usage_from_openai,
)

OPENAI_CHAT = {
    "prompt_tokens": 101, "completion_tokens": 23, "total_tokens": 124,
    "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 9, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0},
}
OPENAI_RESPONSES = {
    "input_tokens": 103, "output_tokens": 25, "total_tokens": 128,
    "input_tokens_details": {"cached_tokens": 42}, "output_tokens_details": {"reasoning_tokens": 7},
}
ANTHROPIC = {
    "input_tokens": 201, "output_tokens": 31, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 60,
    "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 0},
}
LANGCHAIN_ANTHROPIC = {
    "input_tokens": 311, "output_tokens": 31, "total_tokens": 342,
    "input_token_details": {"cache_read": 60, "cache_creation": 0, "ephemeral_5m_input_tokens": 50,
                            "ephemeral_1h_input_tokens": 0},
    "output_token_details": {"reasoning": 4},
}


def test_openai_chat_prompt_already_includes_cached_tokens() -> None:
    assert usage_from_openai(OPENAI_CHAT) == UsageReport(101, 23, 40, 9, 5)


def test_openai_chat_as_attribute_object() -> None:
    obj = SimpleNamespace(prompt_tokens=10, completion_tokens=2, prompt_tokens_details=None,
                          completion_tokens_details=SimpleNamespace(reasoning_tokens=1))
    assert usage_from_openai(obj) == UsageReport(10, 2, None, None, 1)


def test_openai_chat_dict_and_object_read_odd_values_alike() -> None:
    # Dicts take a fast path of their own: it must agree with the generic accessor on every value.
    raw = {"prompt_tokens": "12", "completion_tokens": None, "prompt_tokens_details": {"cached_tokens": None},
           "completion_tokens_details": SimpleNamespace(reasoning_tokens=3.0)}
    expected = UsageReport(12, None, None, None, 3)  # no completion count and no total: output not reported
    assert usage_from_any(raw) == usage_from_openai(raw) == expected
    as_object = SimpleNamespace(**{**raw, "prompt_tokens_details": SimpleNamespace(cached_tokens=None)})
    assert usage_from_openai(as_object) == expected
    for bad in ("x", 2.5, -1, True, 2**40):  # never read as a number they are not
        with pytest.raises((TypeError, ValueError), match=repr(bad)):
            usage_from_any({"prompt_tokens": 7, "completion_tokens": bad})


def test_openai_responses_shape() -> None:
    assert usage_from_openai(OPENAI_RESPONSES) == UsageReport(103, 25, 42, None, 7)


def test_openai_embeddings_have_no_output() -> None:
    assert usage_from_openai({"prompt_tokens": 8, "total_tokens": 8}) == UsageReport(8, 0)


def test_anthropic_input_excludes_cache_so_normalized_input_adds_it() -> None:
    report = usage_from_anthropic(ANTHROPIC)
    assert report == UsageReport(input_tokens=311, output_tokens=31, cached_input_tokens=60,
                                 cache_write_tokens=50, reasoning_tokens=None, cache_write_1h_tokens=0)


def test_anthropic_message_delta_with_only_output_leaves_input_unknown() -> None:
    assert usage_from_anthropic({"output_tokens": 32}) == UsageReport(output_tokens=32)


def test_anthropic_one_hour_cache_writes_are_kept_apart() -> None:
    raw = {**ANTHROPIC, "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30}}
    assert usage_from_anthropic(raw).cache_write_1h_tokens == 30


def test_langchain_usage_metadata_sums_cache_write_variants() -> None:
    assert usage_from_langchain(LANGCHAIN_ANTHROPIC) == UsageReport(311, 31, 60, 50, 4, 0)


def test_langchain_stream_cache_creation_without_breakdown() -> None:
    meta = {"input_tokens": 314, "output_tokens": 32, "input_token_details": {"cache_creation": 51, "cache_read": 61}}
    assert usage_from_langchain(meta) == UsageReport(314, 32, 61, 51, None, None)


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_langchain_usage_at_a_service_tier_keeps_its_cache_reads_and_reasoning(tier: str) -> None:
    # langchain-openai names the details after the tier that served the call.
    meta = {"input_tokens": 1000, "output_tokens": 900,
            "input_token_details": {f"{tier}_cache_read": 800, tier: 200},
            "output_token_details": {f"{tier}_reasoning": 600, tier: 300}}
    assert usage_from_langchain(meta) == UsageReport(1000, 900, 800, None, 600, None)


def test_gemini_thoughts_are_output_tokens() -> None:
    meta = {"prompt_token_count": 50, "candidates_token_count": 10, "thoughts_token_count": 6,
            "cached_content_token_count": 20}
    assert usage_from_gemini(meta) == UsageReport(50, 16, 20, None, 6)


def test_any_recognizes_each_shape() -> None:
    assert usage_from_any(OPENAI_CHAT).input_tokens == 101
    assert usage_from_any(OPENAI_RESPONSES).cached_input_tokens == 42
    assert usage_from_any(ANTHROPIC).input_tokens == 311
    assert usage_from_any(LANGCHAIN_ANTHROPIC).input_tokens == 311
    assert usage_from_any({"prompt_token_count": 3, "candidates_token_count": 1}).output_tokens == 1
    assert usage_from_any({"input_tokens": 5, "output_tokens": 2}) == UsageReport(5, 2)
    assert usage_from_any(None).is_empty()


def test_report_update_takes_latest_value_per_field_never_sums() -> None:
    report = usage_from_anthropic({"input_tokens": 202, "output_tokens": 1, "cache_read_input_tokens": 61,
                                   "cache_creation_input_tokens": 51})
    report.update(usage_from_anthropic({"output_tokens": 32}))
    assert report == UsageReport(314, 32, 61, 51, None, None)


def test_chat_prompt_estimate_frames_each_message_and_counts_its_role_per_encoding() -> None:
    from tokenspy_core.tokenizer import count_message_tokens, encoding_for_model

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there, friend"}]
    for model in ("gpt-4o", "gpt-4", "gpt-4o"):  # o200k, cl100k, then o200k again (roles counted once each)
        enc = encoding_for_model(model)
        expected = sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages) + 3
        assert count_message_tokens(messages, model) == expected
    # A role with special-token text is counted as text, like message contents.
    assert count_message_tokens([{"role": "<|endoftext|>", "content": ""}], "gpt-4o") == 3 + len(
        encoding_for_model("gpt-4o").encode("<|endoftext|>", disallowed_special=())) + 3


def test_prompt_estimates_count_tool_calls_and_results_in_the_history() -> None:
    from tokenspy_core.tokenizer import count_message_tokens, count_tokens, count_tool_tokens

    args = '{"city":"Paris"}'
    openai_history = [{"role": "assistant", "content": None,
                       "tool_calls": [{"id": "c1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": args}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}]
    anthropic_history = [{"role": "assistant", "content": [
                             {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                                       "content": [{"type": "text", "text": "Sunny"}]}]}]
    plain = [{"role": "assistant", "content": "get_weather" + args}, {"role": "tool", "content": "Sunny"}]
    assert count_message_tokens(openai_history) == count_message_tokens(plain)
    plain[1]["role"] = "user"
    assert count_message_tokens(anthropic_history) == count_message_tokens(plain)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert count_tool_tokens(tools) == count_tokens('[{"name":"get_weather","input_schema":{"type":"object"}}]')
    assert count_tool_tokens(None) == 0


def test_langchain_usage_without_details_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="-5"):
        usage_from_langchain({"input_tokens": -5, "output_tokens": 3})


# -- Gemini's OpenAI-compatible usage: thoughts beside the completion, in the total --------------------------
GEMINI_COMPAT_CHAT = {"prompt_tokens": 20, "completion_tokens": 198, "total_tokens": 623,
                      "completion_tokens_details": {"reasoning_tokens": 405}}


@pytest.mark.parametrize("usage", [
    GEMINI_COMPAT_CHAT,
    SimpleNamespace(prompt_tokens=20, completion_tokens=198, total_tokens=623, prompt_tokens_details=None,
                    completion_tokens_details=SimpleNamespace(reasoning_tokens=405)),
    {"input_tokens": 20, "output_tokens": 198, "total_tokens": 623,
     "output_tokens_details": {"reasoning_tokens": 405}},
], ids=["chat dict", "chat object", "responses"])
def test_gemini_compatible_reasoning_beside_the_completion_is_output(usage: object) -> None:
    assert usage_from_openai(usage) == UsageReport(20, 603, None, None, 405)


def test_gemini_compatible_reasoning_smaller_than_the_answer_is_output_too() -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 500, "total_tokens": 620,
             "completion_tokens_details": {"reasoning_tokens": 100}}
    assert usage_from_any(usage) == UsageReport(20, 600, None, None, 100)


def test_gemini_compatible_reasoning_through_langchain_openai_is_output() -> None:
    # langchain-openai's usage_metadata keeps OpenAI's counts and total as they are.
    meta = {"input_tokens": 20, "output_tokens": 0, "total_tokens": 80,
            "input_token_details": {}, "output_token_details": {"reasoning": 60}}
    assert usage_from_langchain(meta) == UsageReport(20, 60, None, None, 60, None)


def test_openai_reasoning_inside_the_completion_is_not_added_again() -> None:
    assert usage_from_openai(OPENAI_CHAT).output_tokens == 23  # total 124 = prompt + completion
    assert usage_from_openai(OPENAI_RESPONSES).output_tokens == 25


def test_reasoning_over_the_completion_without_a_total_saying_why_is_left_out_not_estimated() -> None:
    import tokenspy
    from tokenspy_core.usage import provider_usage

    call = tokenspy.start_call("gpt-4o", provider="openai", prompt=[{"role": "user", "content": "hi"}])
    provider_usage(call.set_usage, {**GEMINI_COMPAT_CHAT, "total_tokens": 218})  # prompt + completion
    record = call.finish()
    assert record is not None
    assert (record.input_tokens, record.output_tokens, record.reasoning_tokens) == (20, 198, 0)
    assert (record.usage_source, record.estimated_fields) == ("provider", ())


def test_deepseek_names_its_cache_hits_on_the_top_level() -> None:
    # DeepSeek's documented usage: no prompt_tokens_details, the prompt split into cache hits and misses.
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
             "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}
    assert usage_from_openai(usage) == UsageReport(1000, 100, 800)
    assert usage_from_openai(SimpleNamespace(**usage, prompt_tokens_details=None)) == UsageReport(1000, 100, 800)
    both = {**usage, "prompt_tokens_details": {"cached_tokens": 800}}  # a gateway sending the two names
    assert usage_from_openai(both) == UsageReport(1000, 100, 800)
