"""The served model is priced first; a served name no price source knows falls back to the one asked for."""

from __future__ import annotations

import warnings
from decimal import Decimal

import httpx
import openai
import pytest

import tokenspy
from tokenspy_core import PRICES


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


# -- a price the user set, on either name, beats a listed one --------------------------------------------
def _azure_answering(served: str) -> openai.AzureOpenAI:
    """An observed AzureOpenAI client whose deployment answers as `served`, with 1M prompt and 1M
    completion tokens."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "total_tokens": 2_000_000}})

    return tokenspy.observe(openai.AzureOpenAI(
        api_key="test", azure_endpoint="http://azure.test", api_version="2024-10-21", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer))))


def test_a_price_set_for_an_azure_deployment_beats_the_served_models_listed_price() -> None:
    tokenspy.set_price("my-deploy", input=1, output=2)
    client = _azure_answering("gpt-4o-2024-11-20")  # listed at $2.50 / $10 per million
    client.chat.completions.create(model="my-deploy", messages=[{"role": "user", "content": "hi"}])
    (record,) = tokenspy.calls()
    assert (record.model, record.request_model, record.provider) == ("gpt-4o-2024-11-20", "my-deploy", "azure")
    assert record.cost == Decimal("3")
    # The hints price the record's calls by the same name.
    assert PRICES.priced_name(record.model, record.request_model, record.provider) == "my-deploy"


def test_a_price_set_for_the_served_model_beats_one_set_for_the_deployment() -> None:
    tokenspy.set_price("my-deploy", input=1, output=2)
    tokenspy.set_price("gpt-4o", input=3, output=4)  # its dated snapshots too
    client = _azure_answering("gpt-4o-2024-11-20")
    client.chat.completions.create(model="my-deploy", messages=[{"role": "user", "content": "hi"}])
    (record,) = tokenspy.calls()
    assert record.cost == Decimal("7")


def test_a_price_set_for_another_model_leaves_the_served_models_listed_price() -> None:
    tokenspy.set_price("some-other-model", input=1, output=1)
    record = _call("my-deploy", "gpt-4o-2024-11-20")
    assert record.cost == Decimal("0.00035")  # 100 x $2.50 + 10 x $10 per million
