"""Token counts a call can have: whole numbers from 0 to MAX_TOKENS. Past it a count is a typo or a
gateway's garbage (and would overflow the store's 64-bit integers): refused when the user passes it."""

from __future__ import annotations

import pytest

import tokenspy
from tokenspy_core import Usage, UsageReport
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


def test_numpy_counts_are_kept_as_ints() -> None:
    # Kept as numpy ints, they broke every later stats()/report() (Decimal refuses them) and the store.
    np = pytest.importorskip("numpy")
    call = tokenspy.start_call("gpt-4o")
    call.set_usage(input_tokens=np.int64(1000), output_tokens=np.int64(10), cached_input_tokens=np.int32(0))
    record = call.finish()
    assert record is not None
    assert [type(v) for v in (record.input_tokens, record.output_tokens, record.cost_femto)] == [int, int, int]
    assert tokenspy.stats()["total_tokens"] == 1010


@pytest.mark.parametrize("usage", [
    UsageReport(input_tokens=-5, output_tokens=1),
    UsageReport(input_tokens=2**41, output_tokens=1),
    UsageReport(input_tokens="5", output_tokens=1),  # type: ignore[arg-type]  # as set_usage(input_tokens="5")
    Usage(input_tokens=-5, output_tokens=1),
    {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 50}},
    {"prompt_tokens": 10, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 5}},
])
def test_a_usage_object_the_user_passes_is_checked_as_fields_are(usage: object) -> None:
    # A negative count priced a negative cost; 50 cached tokens were billed on top of a 10-token prompt.
    call = tokenspy.start_call("gpt-4o")
    with pytest.raises((TypeError, ValueError)):
        call.set_usage(usage)
    call.set_usage(input_tokens=10, output_tokens=2)  # the call is untouched by the refused report
    record = call.finish()
    assert record is not None and (record.input_tokens, record.cached_input_tokens, record.output_tokens,
                                   record.reasoning_tokens) == (10, 0, 2, 0)


def test_record_refuses_a_one_hour_write_count_that_is_no_count() -> None:
    for bad in (False, 0.0, ""):
        with pytest.raises(TypeError, match="cache_write_1h_tokens must be an int"):
            tokenspy.record("gpt-4o", input_tokens=1, output_tokens=0, cache_write_1h_tokens=bad)  # type: ignore[arg-type]
