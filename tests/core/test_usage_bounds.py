"""Token counts a call can have: whole numbers from 0 to MAX_TOKENS. Past it a count is a typo or a
gateway's garbage (and would overflow the store's 64-bit integers): refused when the user passes it."""

from __future__ import annotations

import pytest

import tokenspy
from tokenspy_core.usage import MAX_TOKENS


def test_record_takes_counts_up_to_max_tokens_and_refuses_more() -> None:
    assert MAX_TOKENS == 1_099_511_627_775  # over a trillion: no call comes near
    record = tokenspy.record("gpt-4o", input_tokens=MAX_TOKENS, output_tokens=0)
    assert record is not None and record.input_tokens == MAX_TOKENS
    for field in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        counts = {"input_tokens": 0, "output_tokens": 0, field: MAX_TOKENS + 1}
        with pytest.raises(ValueError, match=f"{field} must be between 0 and 1,099,511,627,775"):
            tokenspy.record("gpt-4o", **counts)


def test_set_usage_refuses_counts_past_max_tokens_and_bools() -> None:
    call = tokenspy.start_call("gpt-4o")
    with pytest.raises(ValueError, match="between 0 and"):
        call.set_usage(input_tokens=10**20, output_tokens=1)
    with pytest.raises(ValueError, match="between 0 and"):
        call.set_usage({"prompt_tokens": 10**20, "completion_tokens": 1})
    with pytest.raises(TypeError, match="whole number of tokens, got True"):
        call.set_usage({"prompt_tokens": True, "completion_tokens": 1})  # was read as "not reported"
    call.set_usage(input_tokens=5, output_tokens=1)
    record = call.finish()
    assert record is not None and (record.input_tokens, record.output_tokens) == (5, 1)
