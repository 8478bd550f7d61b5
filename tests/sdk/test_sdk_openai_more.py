"""openai beyond chat: Responses, Embeddings, legacy Completions, raw/streaming responses, Azure."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai._legacy_response import LegacyAPIResponse
from sdk_helpers import (
    EMBEDDING_3_SMALL,
    GPT_4O,
    MESSAGES,
    assert_exact,
    cost,
    openai_expected,
    responses_expected,
)
from test_sdk_openai_chat import PROMPT_ESTIMATE, only_record

import tokenspy
from tokenspy._observe import instrument_sdks, uninstrument_sdks
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

# -- Responses API ---------------------------------------------------------------------------------


def test_responses_non_stream_records_exact_usage_with_reasoning(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    fp.reasoning_tokens = 5
    with tokenspy.session("s"):
        response = oai.responses.create(model="gpt-4o", input="Tell me a joke", instructions="Be brief.")
    assert response.output_text == fp.reply
    record = only_record()
    assert_exact(record, responses_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.reasoning_tokens == 5


def test_responses_stream_records_usage_from_response_completed(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        text = "".join(
            e.delta
            for e in oai.responses.create(model="gpt-4o", input="hi", stream=True)
            if e.type == "response.output_text.delta"
        )
    assert text == fp.reply
    record = only_record()
    assert_exact(record, responses_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.streamed


@pytest.mark.parametrize("stream", [False, True])
def test_beta_responses_are_tracked_as_responses(oai: openai.OpenAI, fp: FakeProvider, stream: bool) -> None:
    # `client.beta.responses` requests `/responses?beta=true`: looked up with its query, the path was
    # no endpoint tokenspy knew, and the call went untracked.
    with tokenspy.session("s") as s:
        result = oai.beta.responses.create(model="gpt-4o", input="hi", stream=stream)
        if stream:
            for _ in result:
                pass
    record = only_record()
    assert_exact(record, responses_expected(fp.requests[0]["usage"]), GPT_4O)
    assert s.calls == 1 and record.streamed is stream


def test_responses_error_event_mid_stream_fails_the_call(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("midstream")
    with tokenspy.session("s"):
        events = list(oai.responses.create(model="gpt-4o", input="hi", stream=True))  # the SDK does not raise
    assert events[-1].type == "error"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    record = only_record()
    assert (record.status, record.partial) == ("failed", True)
    assert record.error == "server_error: fake provider: midstream error"
    assert record.output_tokens == count_tokens(text, "gpt-4o")


def test_responses_stream_break_records_partial(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        for event in oai.responses.create(model="gpt-4o", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                break
    record = only_record()
    assert (record.status, record.partial, record.output_tokens) == (
        "aborted",
        True,
        count_tokens(event.delta),
    )


def test_responses_stream_helper_final_response(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"), oai.responses.stream(model="gpt-4o", input="hi") as s:
        final = s.get_final_response()
    assert final.usage is not None and final.usage.input_tokens == fp.requests[0]["usage"]["input_tokens"]
    assert_exact(only_record(), responses_expected(fp.requests[0]["usage"]), GPT_4O)


# -- Embeddings and legacy Completions ---------------------------------------------------------------


def test_responses_compact_is_a_recorded_model_call() -> None:
    # `responses.compact` runs the model over the conversation and is billed like any response.
    usage = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 1000}, "output_tokens": 400,
             "output_tokens_details": {"reasoning_tokens": 100}, "total_tokens": 5400}
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={
            "id": "cmp_1", "created_at": 1, "object": "response.compaction", "model": "gpt-4o-2024-08-06",
            "output": [{"type": "compaction", "id": "cmp_item_1", "encrypted_content": "opaque"}],
            "usage": usage})

    client = tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                            http_client=httpx.Client(transport=httpx.MockTransport(handler))))
    client.responses.compact(model="gpt-4o", input=[{"role": "user", "content": "a long conversation"}])
    assert paths == ["/v1/responses/compact"]
    record = only_record()
    assert (record.model, record.usage_source, record.status) == ("gpt-4o-2024-08-06", "provider", "finished")
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        5000, 1000, 400, 100)
    assert record.cost == cost(GPT_4O, input=5000, output=400, cached=1000)


# gpt-5 per million tokens at each service tier (genai-prices, written out)
GPT_5_TIERS = {"default": (Decimal("1.25"), Decimal("10")), "flex": (Decimal("0.625"), Decimal("5")),
               "priority": (Decimal("2.50"), Decimal("20"))}


@pytest.mark.parametrize("tier", ["default", "flex", "priority"])
@pytest.mark.parametrize("api", ["chat", "chat-stream", "responses"])
def test_calls_are_priced_at_the_service_tier_that_served_them(api: str, tier: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["service_tier"] == tier
        base = {"id": "r1", "created": 1, "model": "gpt-5-2025-08-07", "service_tier": tier}
        if api == "responses":
            return httpx.Response(200, json={
                **base, "object": "response", "created_at": 1, "status": "completed", "output": [],
                "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 100,
                          "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1100}})
        usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
        if api == "chat":
            return httpx.Response(200, json={**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]})
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [{**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
                  {**chunk, "choices": [], "usage": usage}]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    client = tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                            http_client=httpx.Client(transport=httpx.MockTransport(handler))))
    if api == "responses":
        client.responses.create(model="gpt-5", input="hi", service_tier=tier)  # type: ignore[arg-type]
    else:
        answer = client.chat.completions.create(model="gpt-5", messages=MESSAGES, service_tier=tier,  # type: ignore[arg-type]
                                                stream=api == "chat-stream")
        if api == "chat-stream":
            list(answer)  # type: ignore[arg-type]
    record = only_record()
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (1000, 100, "provider")
    input_rate, output_rate = GPT_5_TIERS[tier]
    assert record.cost == (1000 * input_rate + 100 * output_rate) / 1_000_000


def test_embeddings_record_exact_input_tokens_and_cost(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        result = oai.embeddings.create(model="text-embedding-3-small", input="The food was delicious")
    assert len(result.data) == 1
    record = only_record()
    assert (record.input_tokens, record.output_tokens) == (fp.requests[0]["usage"]["prompt_tokens"], 0)
    assert (record.operation, record.usage_source) == ("embeddings", "provider")
    assert record.cost == record.input_tokens * EMBEDDING_3_SMALL / 1_000_000


def test_legacy_completions_stream_hides_injected_usage_chunk(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        chunks = list(oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True))
    assert all(c.choices for c in chunks)
    usage = fp.requests[0]["usage"]
    record = only_record()
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        "provider",
    )
    assert record.operation == "text_completion"


# -- raw and streaming responses ---------------------------------------------------------------------


def test_with_raw_response_parse_returns_the_tracked_completion(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert isinstance(raw, LegacyAPIResponse)
    assert raw.parse() is raw.parse()  # the SDK's cache: one object, parsed once
    assert raw.parse().choices[0].message.content == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_with_raw_response_cached_before_patching_is_still_tracked(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    uninstrument_sdks()
    raw_create = oai.chat.completions.with_raw_response.create  # binds the SDK's own create
    instrument_sdks()
    with tokenspy.session("s"):
        raw_create(model="gpt-4o", messages=MESSAGES).parse()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_with_raw_response_stream_parse_gives_the_tracked_stream(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    with tokenspy.session("s"):
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        s = raw.parse()
        assert isinstance(s, openai.Stream) and s is raw.parse()
        text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)  # the usage chunk asked for
    assert text == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_with_streaming_response_parsed_body_is_tracked(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with (
        tokenspy.session("s"),
        oai.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as response,
    ):
        assert tokenspy.calls() == []  # the body is not read yet
        completion = response.parse()
    assert completion.choices[0].message.content == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_with_streaming_response_closed_unread_records_partial(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with (
        tokenspy.session("s"),
        oai.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as response,
    ):
        assert response.status_code == 200
    record = only_record()
    assert (record.status, record.partial, record.input_tokens) == ("aborted", True, PROMPT_ESTIMATE)


def test_with_streaming_response_stream_is_tracked(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with (
        tokenspy.session("s"),
        oai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ) as response,
    ):
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


async def test_async_with_streaming_response_parsed_body_is_tracked(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    async with (
        tokenspy.session("s"),
        aoai.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES) as response,
    ):
        await response.parse()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_raw_response_post_parser_error_still_records_usage(oai: openai.OpenAI, fp: FakeProvider) -> None:
    # `parse()` with a response_format whose JSON does not validate: the user's parse() raises,
    # the call was made and billed all the same.
    from pydantic import BaseModel

    class Joke(BaseModel):
        setup: str

    with tokenspy.session("s"):
        raw = oai.chat.completions.with_raw_response.parse(
            model="gpt-4o", messages=MESSAGES, response_format=Joke
        )
    with pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises for invalid JSON
        raw.parse()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


# -- Azure (no fake route for deployment paths: a mock transport) -------------------------------------


def _azure(api_version: str, bodies: list[dict[str, Any]]) -> openai.AzureOpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        if bodies[-1].get("stream"):
            chunks = [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "gpt-4o-2024-08-06",
                    "choices": [{"index": 0, "delta": {"content": "Hi!"}, "finish_reason": "stop"}],
                }
            ]
            if (bodies[-1].get("stream_options") or {}).get("include_usage"):
                chunks.append(
                    {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": "gpt-4o-2024-08-06",
                        "choices": [],
                        "usage": usage,
                    }
                )
            sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-2024-08-06",
                "usage": usage,
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi!"}}
                ],
            },
        )

    return openai.AzureOpenAI(
        api_key="k",
        api_version=api_version,
        azure_endpoint="https://example.azure.com",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )


def test_azure_call_is_recorded_as_azure_and_priced_by_served_model() -> None:
    bodies: list[dict[str, Any]] = []
    client = tokenspy.observe(_azure("2024-10-21", bodies))
    chunks = list(client.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["Hi!"]
    assert bodies[0]["stream_options"] == {"include_usage": True}
    record = only_record()
    assert (record.provider, record.request_model, record.model) == (
        "azure",
        "my-deployment",
        "gpt-4o-2024-08-06",
    )
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (12, 3, "provider")
    assert record.cost == (12 * GPT_4O["input"] + 3 * GPT_4O["output"]) / 1_000_000


def test_azure_api_version_without_stream_options_is_not_sent_them() -> None:
    bodies: list[dict[str, Any]] = []
    client = tokenspy.observe(_azure("2024-06-01", bodies))
    list(client.chat.completions.create(model="my-deployment", messages=MESSAGES, stream=True))
    assert "stream_options" not in bodies[0]
    assert only_record().usage_source == "estimated"
