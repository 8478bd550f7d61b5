"""The served model is priced first; a served name no price source knows falls back to the one asked for."""

from __future__ import annotations

import warnings

import pytest

import tokenspy


def _call(requested: str, served: str) -> tokenspy.CallRecord:
    call = tokenspy.start_call(requested)
    call.set_model(served)
    call.set_usage(input_tokens=100, output_tokens=10)
    record = call.finish()
    assert record is not None
    return record


def test_a_known_served_snapshot_is_priced_at_its_own_rates() -> None:
    tokenspy.set_price("my-model", input=1, output=1)
    tokenspy.set_price("my-model-2025", input=2, output=2)
    record = _call("my-model", "my-model-2025")
    assert record.model == "my-model-2025"
    assert record.cost_usd == pytest.approx(110 * 2 / 1e6)


def test_an_unknown_served_name_is_priced_as_the_model_asked_for_without_a_warning() -> None:
    tokenspy.set_price("my-model", input=1, output=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = _call("my-model", "gateway-alias-x")
    assert record.model == "gateway-alias-x"
    assert record.cost_usd == pytest.approx(110 / 1e6)


def test_neither_known_is_unpriced_and_warned_once_naming_the_model_asked_for() -> None:
    with pytest.warns(UserWarning, match="'unknown-asked'") as said:
        record = _call("unknown-asked", "unknown-served")
    assert record.cost_usd is None
    assert len([w for w in said if "no price known" in str(w.message)]) == 1
