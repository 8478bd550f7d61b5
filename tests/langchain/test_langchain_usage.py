"""Exact usage per LangChain model run, every mode, counted once (expected numbers: the fake's log)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import Generation, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_openai import OpenAI
from lc_helpers import CLAUDE, GPT, KEY, anthropic_chat, from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler, _handler
from tokenspy.testing import DEFAULT_REPLY, FakeProvider
from tokenspy_core.tokenizer import count_tokens

LONG_PROMPT = "Tell me everything about the history of France. " * 20  # room for cache tokens


def only_record(handler: TokenSpyHandler) -> tokenspy.CallRecord:
    records = tokenspy.calls()
    assert len(records) == 1, records
    assert handler.stats()["calls"] == [records[0].to_dict()]
    return records[0]


def test_openai_invoke_records_the_exact_usage_once(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    fp.cached_tokens, fp.cache_write_tokens = 4, 2
    message = openai_chat(fp).invoke(LONG_PROMPT, config={"callbacks": [handler]})
    assert message.content == DEFAULT_REPLY
    record = only_record(handler)
    expected = from_log(fp.requests[0])
    assert expected.cached_input_tokens == 4 and expected.cache_write_tokens == 2
    assert expected.matches(record)
    assert (record.model, record.provider, record.usage_source, record.streamed, record.status) == (
        GPT, "openai", "provider", False, "finished")
    assert tokenspy.stats()["total_cost_usd_exact"] == str(record.cost)


def test_openai_stream_with_usage_on_a_chunk_and_at_the_end_counts_it_once(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    chunks = list(openai_chat(fp, stream_usage=True).stream("hi", config={"callbacks": [handler]}))
    assert sum(1 for c in chunks if c.usage_metadata) == 1  # the usage chunk, then on_llm_end again
    assert fp.requests[0]["stream_options"] == {"include_usage": True}
    record = only_record(handler)
    assert from_log(fp.requests[0]).matches(record)
    assert (record.usage_source, record.streamed, record.partial) == ("provider", True, False)
    assert record.ttft_s is not None


def test_openai_stream_without_provider_usage_is_estimated_and_says_so(
        fp: FakeProvider, no_sdk_layer: None, handler: TokenSpyHandler, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # base_url set and no stream_usage: LangChain does not ask for usage (reference §1.3).
    monkeypatch.setattr(_handler, "_warned_stream_usage", False)
    with caplog.at_level(logging.WARNING, logger="tokenspy"):
        text = "".join(str(c.content) for c in openai_chat(fp).stream("hi", config={"callbacks": [handler]}))
        openai_chat(fp).invoke("hi", config={"callbacks": [handler]})
    assert fp.requests[0]["usage"] is None and text == DEFAULT_REPLY
    streamed, exact = tokenspy.calls()
    assert streamed.usage_source == "estimated"
    assert streamed.estimated_fields == ("input_tokens", "output_tokens")
    assert streamed.output_tokens == count_tokens(DEFAULT_REPLY, GPT)
    assert exact.usage_source == "provider"
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "stream_usage=True" in caplog.records[0].message


def test_streaming_model_invoked_streams_with_exact_usage(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    openai_chat(fp, streaming=True, stream_usage=True).invoke("hi", config={"callbacks": [handler]})
    record = only_record(handler)
    assert fp.requests[0]["stream"] and record.streamed
    assert from_log(fp.requests[0]).matches(record)


def test_anthropic_invoke_counts_cache_reads_and_writes(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    fp.cached_tokens, fp.cache_write_tokens = 30, 20
    anthropic_chat(fp).invoke(LONG_PROMPT, config={"callbacks": [handler]})
    record = only_record(handler)
    expected = from_log(fp.requests[0])
    assert (expected.cached_input_tokens, expected.cache_write_tokens) == (30, 20)
    assert expected.model == CLAUDE and expected.matches(record)
    assert (record.provider, record.usage_source) == ("anthropic", "provider")


def test_anthropic_stream_with_full_usage_in_message_delta_is_exact(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    fp.cached_tokens, fp.cache_write_tokens = 30, 20
    fp.set_flags("fulldelta")
    chunks = anthropic_chat(fp).stream(LONG_PROMPT, config={"callbacks": [handler]})
    assert "".join(str(c.content) for c in chunks)
    record = only_record(handler)
    assert from_log(fp.requests[0]).matches(record)
    assert record.usage_source == "provider" and record.streamed


def test_anthropic_classic_stream_input_zero_means_unknown_not_zero(
        fp: FakeProvider, no_sdk_layer: None, handler: TokenSpyHandler) -> None:
    # Usage only in message_start (dropped by langchain-anthropic) and output in message_delta:
    # LangChain reports input_tokens 0 (reference §1.10). The input is estimated, never 0.
    list(anthropic_chat(fp).stream("What is the capital of France?", config={"callbacks": [handler]}))
    record = only_record(handler)
    logged = from_log(fp.requests[0])
    assert record.output_tokens == logged.output_tokens
    assert record.input_tokens > 0 and record.estimated_fields == ("input_tokens",)
    assert record.usage_source == "mixed"


async def test_async_invoke_stream_and_events_are_exact(
        fp: FakeProvider, aio: httpx.AsyncClient, layers: str, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp, aio=aio, stream_usage=True)
    config: RunnableConfig = {"callbacks": [handler]}
    await llm.ainvoke("one", config=config)
    [c async for c in llm.astream("two", config=config)]
    [e async for e in llm.astream_events("three", config=config, version="v2")]
    records = tokenspy.calls()
    assert [r.streamed for r in records] == [False, True, True]
    assert all(from_log(entry).matches(r) for entry, r in zip(fp.requests, records, strict=True))
    assert handler.open_runs == 0


def test_v3_stream_events_repeat_the_usage_and_still_count_once(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp, stream_usage=True)
    events = list(llm.stream_events("hi", config={"callbacks": [handler]}, version="v3"))
    assert any(isinstance(e, dict) and e.get("event") == "message-finish" and e.get("usage") for e in events)
    record = only_record(handler)
    assert from_log(fp.requests[0]).matches(record)


def test_legacy_completion_llm_takes_usage_from_llm_output(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    tokenspy.set_price("gpt-3.5-turbo-instruct", input=1.5, output=2)
    llm = OpenAI(model="gpt-3.5-turbo-instruct", base_url=fp.openai_base_url, api_key=KEY, max_retries=0)
    llm.invoke("Say something", config={"callbacks": [handler]})
    record = only_record(handler)
    usage = fp.requests[0]["usage"]
    assert (record.input_tokens, record.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.usage_source == "provider"
    assert record.cost_femto == (usage["prompt_tokens"] * 1_500_000_000
                                 + usage["completion_tokens"] * 2_000_000_000)


def test_fake_chat_model_without_usage_is_estimated(handler: TokenSpyHandler) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("red green blue"), AIMessage("one two")]))
    model.invoke("colours?", config={"callbacks": [handler]})
    chunks = model.stream("numbers?", config={"callbacks": [handler]})
    assert "".join(str(c.content) for c in chunks) == "one two"
    invoked, streamed = tokenspy.calls()
    assert invoked.output_tokens == count_tokens("red green blue") and not invoked.streamed
    assert streamed.output_tokens == count_tokens("one two") and streamed.streamed
    assert {invoked.usage_source, streamed.usage_source} == {"estimated"}
    assert invoked.model is None and invoked.cost_femto is None  # unknown model: unpriced, never $0


def test_with_the_sdk_layer_a_base_url_stream_is_exact_and_recorded_once(
        fp: FakeProvider, sdk_layer: None, handler: TokenSpyHandler) -> None:
    # LangChain sends no stream_options with a base_url; the SDK layer asks for usage, hides the extra
    # chunk from LangChain and merges the usage into the handler's record.
    chunks = list(openai_chat(fp).stream("hi", config={"callbacks": [handler]}))
    assert not any(c.usage_metadata for c in chunks)
    assert fp.requests[0]["stream_options"] == {"include_usage": True}
    record = only_record(handler)
    assert from_log(fp.requests[0]).matches(record) and record.usage_source == "provider"


def test_with_the_sdk_layer_a_classic_anthropic_stream_keeps_input_and_cache(
        fp: FakeProvider, sdk_layer: None, handler: TokenSpyHandler) -> None:
    # LangChain reports input 0 and no cache here; the SDK layer saw message_start. LangChain's later
    # 0 must not overwrite the exact input (reference §1.10).
    fp.cached_tokens, fp.cache_write_tokens = 30, 20
    list(anthropic_chat(fp).stream(LONG_PROMPT, config={"callbacks": [handler]}))
    record = only_record(handler)
    expected = from_log(fp.requests[0])
    assert expected.cached_input_tokens == 30 and expected.matches(record)
    assert record.usage_source == "provider"


def test_batched_prompts_after_the_first_carry_no_usage_of_their_own(handler: TokenSpyHandler) -> None:
    # One completion request for several prompts: LangChain gives its usage to the first prompt's
    # run and an empty token_usage to the others (LLMResult.flatten), so the total is counted once.
    class BatchLLM(BaseLLM):
        @property
        def _llm_type(self) -> str:
            return "batch"

        def _generate(self, prompts: list[str], stop: list[str] | None = None, run_manager: Any = None,
                      **kwargs: Any) -> LLMResult:
            return LLMResult(generations=[[Generation(text=f"answer {p}")] for p in prompts],
                             llm_output={"token_usage": {"prompt_tokens": 30, "completion_tokens": 9},
                                         "model_name": "gpt-3.5-turbo-instruct"})

    tokenspy.set_price("gpt-3.5-turbo-instruct", input=1.5, output=2)
    BatchLLM().batch(["a", "b", "c"], config={"callbacks": [handler]})
    records = tokenspy.calls()
    assert [(r.input_tokens, r.output_tokens) for r in records] == [(30, 9), (0, 0), (0, 0)]
    assert {r.usage_source for r in records} == {"provider"}


@pytest.mark.parametrize(("params", "serialized", "metadata", "expected"), [
    ({"model": "gpt-4o", "model_name": "other"}, None, None, "gpt-4o"),
    ({"model": "", "model_name": "gpt-4o-mini"}, None, None, "gpt-4o-mini"),
    ({"model": 42, "deployment_name": "my-deployment"}, None, None, "my-deployment"),  # a non-str is skipped
    ({"_type": "fake"}, {"kwargs": {"model_id": "claude-x"}}, {"ls_model_name": "ignored"}, "claude-x"),
    ({}, {"id": ["x"]}, {"ls_model_name": "from-ls-params"}, "from-ls-params"),
    ({}, None, {"ls_model_name": ""}, None),
])
def test_request_model_reads_params_then_constructor_args_then_ls_params(
        params: dict[str, Any], serialized: Any, metadata: Any, expected: str | None) -> None:
    from tokenspy.langchain import _extract

    assert _extract.request_model(serialized, params, metadata) == expected
    # The generic accessor (non-dict payloads) agrees with the plain-dict reading.
    from types import SimpleNamespace

    assert _extract.request_model(serialized, SimpleNamespace(**params), metadata) == expected


def test_capture_content_keeps_prompt_and_answer_of_invoke_and_stream(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    tokenspy.init(capture_content=True)
    try:
        llm = openai_chat(fp, stream_usage=True)
        llm.invoke("hi", config={"callbacks": [handler]})
        "".join(str(c.content) for c in llm.stream("hi", config={"callbacks": [handler]}))
    finally:
        tokenspy.init()
    records = tokenspy.calls()
    assert [(r.prompt, r.response, r.usage_source) for r in records] == [
        ([{"role": "user", "content": "hi"}], DEFAULT_REPLY, "provider")] * 2


def test_a_call_served_at_the_flex_tier_is_priced_at_its_rates_without_the_sdk_layer() -> None:
    # The handler's own reading (here the SDK layer is off): response_metadata["service_tier"].
    from decimal import Decimal

    from langchain_openai import ChatOpenAI

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-5-2025-08-07", "service_tier": "flex",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}})

    tokenspy.init(auto_instrument=False)
    model = ChatOpenAI(model="gpt-5", api_key=KEY, base_url="http://mock/v1", service_tier="flex",
                       http_client=httpx.Client(transport=httpx.MockTransport(reply)))
    assert model.invoke("x", config={"callbacks": [TokenSpyHandler()]}).response_metadata["service_tier"] == "flex"
    [record] = tokenspy.calls()
    assert record.cost == (1000 * Decimal("0.625") + 1000 * Decimal("5")) / 1_000_000  # gpt-5 flex, not 1.25/10
