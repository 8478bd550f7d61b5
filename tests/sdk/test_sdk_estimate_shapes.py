"""Estimates from the shapes the SDKs themselves hand back: a history holding the SDK's own content
blocks, a tool call stopped in its arguments, a tool call answered without usage. Each is compared
with what the fake provider bills for the same request (its log), not with tokenspy's own rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from sdk_helpers import HAIKU_MODEL, MESSAGES, anthropic_expected, responses_expected
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Get the weather", "input_schema": WEATHER_SCHEMA}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
ARGS: dict[str, Any] = {"model": HAIKU_MODEL, "max_tokens": 256, "tools": ANTHROPIC_TOOLS}


# -- a history of the SDK's own content blocks ------------------------------------------------------
def test_anthropic_history_of_sdk_blocks_is_estimated_as_billed(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    # Anthropic's documented tool loop appends `response.content` as it is: the SDK's pydantic blocks.
    asked = ant.messages.create(**ARGS, messages=MESSAGES)
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": asked.content[0].id,
                                           "content": "sunny"}]}
    answered = ant.messages.create(**ARGS, messages=[*MESSAGES, {"role": "assistant", "content": asked.content},
                                                     result])
    assert isinstance(asked.content[0], anthropic.types.ToolUseBlock)
    assert isinstance(answered.content[0], anthropic.types.TextBlock)
    history = [*MESSAGES, {"role": "assistant", "content": asked.content}, result,
               {"role": "assistant", "content": answered.content}, {"role": "user", "content": "Thanks!"}]
    ant.messages.create(**ARGS, messages=history)
    billed = anthropic_expected(fp.requests[-1]["usage"])["input_tokens"]
    tokenspy.reset()

    with tokenspy.observe(ant).messages.stream(**ARGS, messages=history):
        pass  # left before message_start: the prompt is estimated
    record = only_record()
    assert (record.status, record.usage_source, record.estimated_fields) == (
        "aborted", "estimated", ("input_tokens", "output_tokens"))
    assert (record.input_tokens, record.output_tokens) == (billed, 0)


# -- a tool call stopped in its arguments: the name is output too ---------------------------------
def _anthropic_until_arguments(ant: anthropic.Anthropic, way: str) -> tuple[str, str]:
    """Reads a tool-call stream up to its first arguments delta: (the tool name, the arguments read)."""
    name = ""
    if way == "create":
        with ant.messages.create(**ARGS, messages=MESSAGES, stream=True) as events:
            for event in events:
                if event.type == "content_block_start" and event.content_block.type == "tool_use":
                    name = event.content_block.name
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    return name, event.delta.partial_json
    else:
        with ant.messages.stream(**ARGS, messages=MESSAGES) as stream:
            for helper_event in stream:
                if helper_event.type == "content_block_start" and helper_event.content_block.type == "tool_use":
                    name = helper_event.content_block.name
                elif helper_event.type == "input_json":
                    return name, helper_event.partial_json
    raise AssertionError("no arguments delta")


@pytest.mark.parametrize("way", ["create", "helper"])
def test_anthropic_tool_stream_stopped_in_arguments_counts_name_and_arguments(
    ant: anthropic.Anthropic, fp: FakeProvider, way: str
) -> None:
    name, arguments = _anthropic_until_arguments(tokenspy.observe(ant), way)
    assert (name, arguments) == ("get_weather", '{"city":')
    record = only_record()
    assert (record.status, record.partial, record.estimated_fields) == ("aborted", True, ("output_tokens",))
    assert record.input_tokens == anthropic_expected({**fp.requests[0]["usage"], "output_tokens": 0})["input_tokens"]
    assert record.output_tokens == count_tokens("get_weather" + '{"city":', HAIKU_MODEL) == 5


def test_responses_tool_stream_stopped_in_arguments_counts_name_and_arguments(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    name = arguments = ""
    with tokenspy.observe(oai).responses.create(model="gpt-4o", input="Weather in Paris?", tools=RESPONSES_TOOLS,
                                               stream=True) as events:
        for event in events:
            if event.type == "response.output_item.added" and event.item.type == "function_call":
                name = event.item.name
            elif event.type == "response.function_call_arguments.delta":
                arguments = event.delta
                break
    assert (name, arguments) == ("get_weather", '{"city":')
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert record.output_tokens == count_tokens("get_weather" + '{"city":', "gpt-4o") == 5


# -- a tool call answered without usage: estimated as the provider bills it -------------------------
def _without_usage(fp: FakeProvider, http: Any) -> Callable[[Any], Any]:
    """A transport handler that forwards to the fake provider and drops `usage` from its JSON answer."""
    def handler(request: Any) -> Any:
        with http.Client() as client:
            answer = client.send(request)
            body = answer.json()
        body.pop("usage")
        return http.Response(answer.status_code, json=body)

    return handler


def test_anthropic_tool_call_without_usage_is_estimated_as_billed(fp: FakeProvider) -> None:
    # A value with both kinds of quotes: Python's repr of the input (`'12" pizza\'s'`) is not the JSON
    # the model wrote, and counts other tokens.
    schema = {"type": "object", "properties": {"size": {"type": "string", "enum": ['a 12" pizza\'s slice']}},
              "required": ["size"]}
    client = tokenspy.observe(anthropic.Anthropic(
        base_url=fp.anthropic_base_url, api_key="sk-ant-fake", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_without_usage(fp, httpx2)))))
    message = client.messages.create(model=HAIKU_MODEL, max_tokens=256, messages=MESSAGES,
                                     tools=[{"name": "order", "input_schema": schema}])
    assert message.content[0].input == {"size": 'a 12" pizza\'s slice'}
    billed = anthropic_expected(fp.requests[0]["usage"])
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert (record.input_tokens, record.output_tokens) == (billed["input_tokens"], billed["output_tokens"]) == (50, 13)


def test_responses_tool_call_without_usage_is_estimated_as_billed(fp: FakeProvider) -> None:
    client = tokenspy.observe(openai.OpenAI(
        base_url=fp.openai_base_url, api_key="sk-fake", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(_without_usage(fp, httpx)))))
    response = client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=RESPONSES_TOOLS)
    assert (response.usage, response.output[0].type) == (None, "function_call")
    billed = responses_expected(fp.requests[0]["usage"])
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert (record.input_tokens, record.output_tokens) == (billed["input_tokens"], billed["output_tokens"]) == (43, 8)
    assert json.loads(response.output[0].arguments) == {"city": "Paris"}


# -- a count no number of tokens can be (a gateway's): estimated, the answer still recorded ----------
def _corrupting(http: Any, field: str, value: Any) -> Callable[[Any], Any]:
    """A transport handler that forwards to the fake provider and sets `usage[field]` in its answer."""
    def handler(request: Any) -> Any:
        with http.Client() as client:
            answer = client.send(request)
            body = answer.json()
        body["usage"][field] = value
        return http.Response(answer.status_code, json=body)

    return handler


@pytest.mark.parametrize(("field", "value"), [("prompt_tokens", -3), ("completion_tokens", 5.5),
                                             ("completion_tokens", 10**20), ("prompt_tokens", "many")])
def test_an_openai_count_no_number_of_tokens_can_be_is_estimated(fp: FakeProvider, field: str, value: Any) -> None:
    client = tokenspy.observe(openai.OpenAI(
        base_url=fp.openai_base_url, api_key="test", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(_corrupting(httpx, field, value)))))
    with tokenspy.session("s"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    billed = fp.requests[0]["usage"]
    record = only_record()  # at once, not left for the garbage collector to end as aborted
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "mixed")
    assert (record.input_tokens, record.output_tokens) == (billed["prompt_tokens"], billed["completion_tokens"])
    assert record.estimated_fields == (("input_tokens",) if field == "prompt_tokens" else ("output_tokens",))


def test_an_anthropic_count_no_number_of_tokens_can_be_is_estimated(fp: FakeProvider) -> None:
    client = tokenspy.observe(anthropic.Anthropic(
        base_url=fp.anthropic_base_url, api_key="test", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_corrupting(httpx2, "output_tokens", -1)))))
    with tokenspy.session("s"):
        client.messages.create(model=HAIKU_MODEL, max_tokens=256, messages=MESSAGES)
    billed = anthropic_expected(fp.requests[0]["usage"])
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "mixed")
    assert (record.input_tokens, record.output_tokens) == (billed["input_tokens"], billed["output_tokens"])


def test_openai_cached_tokens_over_the_prompt_are_left_out(fp: FakeProvider) -> None:
    # Priced as reported, each cached token would be billed on top of a smaller prompt.
    client = tokenspy.observe(openai.OpenAI(
        base_url=fp.openai_base_url, api_key="test", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(
            _corrupting(httpx, "prompt_tokens_details", {"cached_tokens": 10**6})))))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    billed = fp.requests[0]["usage"]
    record = only_record()
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.usage_source) == (
        billed["prompt_tokens"], 0, billed["completion_tokens"], "provider")


def test_a_streamed_text_delta_that_is_not_text_leaves_the_rest_counted() -> None:
    # A gateway's malformed chunk: the SDK hands it over unvalidated, and tokenspy appends deltas
    # unchecked (per chunk); the record, estimated from the text, must not be lost at the end.
    def chunk(text: Any, finish: str | None = None) -> bytes:
        body = {"id": "c", "object": "text_completion", "created": 0, "model": "gpt-3.5-turbo-instruct",
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(body)}\n\n".encode()

    body = chunk("Hello") + chunk(5) + chunk(" world", "stop") + b"data: [DONE]\n\n"
    client = tokenspy.observe(openai.OpenAI(
        base_url="http://gateway/v1", api_key="test", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body)))))
    for _ in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True,
                                       stream_options={"include_usage": False}):
        pass
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert record.output_tokens == count_tokens("Hello world", "gpt-3.5-turbo-instruct")


def test_an_anthropic_cache_count_no_number_of_tokens_can_be_leaves_the_input_estimated(fp: FakeProvider) -> None:
    # Anthropic's input excludes the cache: without a usable cache count the prompt's size is unknown
    # (the raw input alone was recorded as an exact, too small input).
    client = tokenspy.observe(anthropic.Anthropic(
        base_url=fp.anthropic_base_url, api_key="test", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(
            _corrupting(httpx2, "cache_read_input_tokens", -3)))))
    client.messages.create(model=HAIKU_MODEL, max_tokens=256, messages=MESSAGES)
    billed = anthropic_expected(fp.requests[0]["usage"])
    record = only_record()
    assert (record.usage_source, record.estimated_fields) == ("mixed", ("input_tokens",))
    assert (record.input_tokens, record.output_tokens) == (billed["input_tokens"], billed["output_tokens"])
