"""The fake provider, driven by the real openai and anthropic SDKs.

Expected usage is recomputed here from the documented rules with the tokenizer, never read back
from the server, so a wrong count on either side fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tokenspy.testing import DEFAULT_REPLY, FakeProvider
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

GPT = "gpt-4o"
CLAUDE = "claude-haiku-4-5"
EMBED = "text-embedding-3-small"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WORDS = ["The", " capital", " of", " France", " is", " Paris."]  # DEFAULT_REPLY in stream pieces
LONG_REPLY = " ".join(f"word{i}" for i in range(40))

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "hint": {"type": "string"},
        },
        "required": ["city", "days", "metric", "unit"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Local time.",
    "parameters": {"type": "object", "properties": {"tz": {"type": ["string", "null"]}}, "required": ["tz"]},
}
WEATHER_ARGS = {"city": "Paris", "days": 2, "metric": True, "unit": "c"}  # from the schema rule


# The server is plain http: `verify=False` only skips loading the CA bundle, ~0.1 s per client.
def openai_client(fp: FakeProvider, max_retries: int = 0) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(verify=False)
    return openai.OpenAI(
        base_url=fp.openai_base_url, api_key="test", max_retries=max_retries, http_client=http
    )


def anthropic_client(fp: FakeProvider, max_retries: int = 0) -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(verify=False)
    return anthropic.Anthropic(
        base_url=fp.anthropic_base_url, api_key="test", max_retries=max_retries, http_client=http
    )


@pytest.fixture
def oai(fake_provider: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai_client(fake_provider) as client:
        yield client


@pytest.fixture
def claude(fake_provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(fake_provider) as client:
        yield client


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tools_tokens(tools: list[dict[str, Any]], model: str) -> int:
    return count_tokens(json.dumps(tools, separators=(",", ":"), ensure_ascii=False), model)


# -- OpenAI chat completions ----------------------------------------------------------------------


def test_chat_non_stream_usage_is_honest_and_model_is_echoed(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.cached_tokens, fake_provider.reasoning_tokens = 5, 4
    r = oai.chat.completions.create(model=GPT, messages=QUESTION)

    prompt = count_message_tokens(QUESTION, GPT)
    expected = chat_usage(prompt, count_tokens(DEFAULT_REPLY, GPT) + 4, cached=5, reasoning=4)
    assert r.model == GPT
    assert r.choices[0].message.content == DEFAULT_REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.model_dump(exclude_none=True) == expected
    [entry] = fake_provider.requests
    assert entry == {
        "path": "/v1/chat/completions",
        "model": GPT,
        "stream": False,
        "stream_options": None,
        "flags": [],
        "usage": expected,
        "outcome": "completed",
        "chunks_sent": 0,
    }


def test_chat_stream_without_include_usage_sends_no_usage(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    chunks = list(oai.chat.completions.create(model=GPT, messages=QUESTION, stream=True))

    assert [c.choices[0].delta.content for c in chunks[1:-1]] == WORDS  # one chunk per word piece
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and "usage" not in c.model_fields_set for c in chunks)
    entry = fake_provider.requests[0]
    assert (entry["usage"], entry["outcome"], entry["chunks_sent"]) == (None, "completed", len(chunks))


def test_chat_stream_usage_chunk_comes_last_and_matches_non_stream(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.cached_tokens, fake_provider.reasoning_tokens = 3, 2
    non_stream = oai.chat.completions.create(model=GPT, messages=QUESTION)
    chunks = list(
        oai.chat.completions.create(
            model=GPT,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    *content, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "stop" and finish.usage is None
    assert all(c.usage is None for c in content)
    assert usage_chunk.choices == [] and usage_chunk.usage == non_stream.usage
    assert (
        non_stream.usage is not None
        and non_stream.usage.completion_tokens == count_tokens(DEFAULT_REPLY, GPT) + 2
    )
    log = fake_provider.requests
    assert log[1]["stream_options"] == {"include_usage": True}
    assert log[1]["usage"] == log[0]["usage"]


def test_legacy_completions_count_the_raw_prompt(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    model = "gpt-3.5-turbo-instruct"
    expected = {
        "prompt_tokens": count_tokens("Say hello", model),
        "completion_tokens": count_tokens(DEFAULT_REPLY, model),
        "total_tokens": count_tokens("Say hello", model) + count_tokens(DEFAULT_REPLY, model),
    }
    r = oai.completions.create(model=model, prompt="Say hello")
    chunks = list(
        oai.completions.create(
            model=model, prompt="Say hello", stream=True, stream_options={"include_usage": True}
        )
    )

    assert r.choices[0].text == DEFAULT_REPLY
    assert r.usage is not None and r.usage.model_dump(exclude_none=True) == expected
    assert [c.choices[0].text for c in chunks[:-2]] == WORDS
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == r.usage


# -- OpenAI Responses -----------------------------------------------------------------------------


def test_responses_non_stream_counts_instructions_and_string_input(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.cached_tokens, fake_provider.reasoning_tokens = 2, 7
    r = oai.responses.create(model=GPT, instructions="Be brief.", input="Capital of France?")

    prompt = count_message_tokens(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}], GPT
    )
    output = count_tokens(DEFAULT_REPLY, GPT) + 7
    assert r.output_text == DEFAULT_REPLY and r.model == GPT
    assert r.usage is not None
    assert r.usage.model_dump() == {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 7},
        "total_tokens": prompt + output,
    }


def test_responses_stream_typed_events_with_usage_only_on_completed(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]}]
    non_stream = oai.responses.create(model=GPT, input=items)
    events = list(oai.responses.create(model=GPT, input=items, stream=True))

    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(WORDS),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == WORDS
    assert events[0].response.usage is None
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == DEFAULT_REPLY
    assert completed.response.usage == non_stream.usage
    assert non_stream.usage is not None
    assert non_stream.usage.input_tokens == count_message_tokens(
        [{"role": "user", "content": "Capital of France?"}], GPT
    )


def test_responses_stream_helper_final_response(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    with oai.responses.stream(model=GPT, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == DEFAULT_REPLY
    assert final.usage is not None and final.usage.output_tokens == count_tokens(DEFAULT_REPLY, GPT)


# -- OpenAI embeddings ----------------------------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors_in_both_encodings(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    texts = ["hello world", "goodbye"]
    default = oai.embeddings.create(model=EMBED, input=texts)  # the SDK asks for base64
    floats = oai.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    again = oai.embeddings.create(model=EMBED, input="hello world", dimensions=16)

    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert all(len(d.embedding) == 8 for d in default.data)
    assert all(math.isclose(math.hypot(*d.embedding), 1.0, rel_tol=1e-5) for d in default.data)
    assert len(again.data[0].embedding) == 16
    expected = sum(count_tokens(t, EMBED) for t in texts)
    assert default.usage.model_dump() == {"prompt_tokens": expected, "total_tokens": expected}
    assert fake_provider.requests[0]["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_embeddings_base64_is_little_endian_float32_and_token_arrays_count_tokens(
    fake_provider: FakeProvider,
) -> None:
    body = {"model": EMBED, "input": [[1, 2, 3], [4, 5]], "encoding_format": "base64"}
    r = httpx.post(fake_provider.openai_base_url + "/embeddings", json=body).json()
    vector = struct.unpack("<8f", base64.b64decode(r["data"][0]["embedding"]))
    assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-5)
    assert r["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


# -- Anthropic messages ---------------------------------------------------------------------------


def anthropic_prompt(system: str, messages: list[dict[str, Any]]) -> int:
    return count_message_tokens([{"role": "system", "content": system}, *messages], CLAUDE)


def test_anthropic_non_stream_input_tokens_exclude_cache(
    fake_provider: FakeProvider, claude: anthropic.Anthropic
) -> None:
    fake_provider.cached_tokens, fake_provider.cache_write_tokens = 6, 3
    m = claude.messages.create(model=CLAUDE, max_tokens=64, system="Be brief.", messages=QUESTION)

    total = anthropic_prompt("Be brief.", QUESTION)
    assert m.model == CLAUDE and m.stop_reason == "end_turn"
    assert m.content[0].type == "text" and m.content[0].text == DEFAULT_REPLY
    assert m.usage.model_dump(exclude_none=True) == {
        "input_tokens": total - 6 - 3,
        "output_tokens": count_tokens(DEFAULT_REPLY, CLAUDE),
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 6,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


def test_anthropic_stream_start_carries_input_and_delta_cumulative_output(
    fake_provider: FakeProvider, claude: anthropic.Anthropic
) -> None:
    fake_provider.cached_tokens, fake_provider.reasoning_tokens = 4, 5
    non_stream = claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    events = list(claude.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION, stream=True))

    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(WORDS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops `ping`
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.output_tokens == 1  # the real API's placeholder
    assert (
        start.message.usage.input_tokens
        == non_stream.usage.input_tokens
        == count_message_tokens(QUESTION, CLAUDE) - 4
    )
    assert start.message.usage.cache_read_input_tokens == 4
    assert (
        delta.usage.output_tokens == non_stream.usage.output_tokens == count_tokens(DEFAULT_REPLY, CLAUDE) + 5
    )
    assert delta.usage.input_tokens is None and delta.usage.cache_read_input_tokens is None  # "classic" shape
    assert [e.delta.text for e in events if e.type == "content_block_delta"] == WORDS
    log = fake_provider.requests
    assert log[1]["usage"] == log[0]["usage"] == non_stream.usage.model_dump(exclude_none=True)
    assert log[1]["chunks_sent"] == len(events) + 1  # + ping


def test_anthropic_fulldelta_repeats_input_and_cache_in_message_delta(
    fake_provider: FakeProvider, claude: anthropic.Anthropic
) -> None:
    fake_provider.cached_tokens, fake_provider.cache_write_tokens = 2, 1
    fake_provider.set_flags("fulldelta")
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=QUESTION) as stream:
        events = list(stream)
        final = stream.get_final_message()
    [delta] = [e for e in events if e.type == "message_delta"]
    assert delta.usage.input_tokens == count_message_tokens(QUESTION, CLAUDE) - 3
    assert (delta.usage.cache_read_input_tokens, delta.usage.cache_creation_input_tokens) == (2, 1)
    assert final.usage.input_tokens == delta.usage.input_tokens
    assert final.usage.output_tokens == count_tokens(DEFAULT_REPLY, CLAUDE)


def test_anthropic_count_tokens_reports_the_whole_prompt(
    fake_provider: FakeProvider, claude: anthropic.Anthropic
) -> None:
    fake_provider.cached_tokens = 3  # caching does not change what count_tokens reports
    r = claude.messages.count_tokens(model=CLAUDE, system="Be brief.", messages=QUESTION)
    assert r.input_tokens == anthropic_prompt("Be brief.", QUESTION)


# -- flags ----------------------------------------------------------------------------------------


def test_http429_raises_rate_limit_error_and_is_not_retried(fake_provider: FakeProvider) -> None:
    fake_provider.set_flags("http429")
    # Default retries on purpose: `x-should-retry: false` must stop both SDKs from retrying.
    with pytest.raises(openai.RateLimitError) as oai_err:
        openai_client(fake_provider, max_retries=2).chat.completions.create(model=GPT, messages=QUESTION)
    with pytest.raises(anthropic.RateLimitError) as claude_err:
        anthropic_client(fake_provider, max_retries=2).messages.create(
            model=CLAUDE, max_tokens=8, messages=QUESTION
        )
    assert oai_err.value.status_code == claude_err.value.status_code == 429
    assert oai_err.value.response.headers["x-should-retry"] == "false"
    assert oai_err.value.code == "rate_limit_exceeded"
    assert claude_err.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake provider: rate limit reached (flag http429)"},
    }
    log = fake_provider.requests
    assert len(log) == 2 and all(e["outcome"] == "error" and e["usage"] is None for e in log)


def test_http500_raises_internal_server_error(
    fake_provider: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake_provider.set_flags("http500")
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model=GPT, input="hi")
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=QUESTION, stream=True)


def test_midstream_error_raises_after_half_the_content(
    fake_provider: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake_provider.set_flags("midstream")
    seen: list[str | None] = []
    with pytest.raises(openai.APIError, match="midstream"):
        for chunk in oai.chat.completions.create(model=GPT, messages=QUESTION, stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", *WORDS[:3]]
    with pytest.raises(anthropic.APIStatusError, match="midstream"):
        list(claude.messages.create(model=CLAUDE, max_tokens=8, messages=QUESTION, stream=True))
    # The openai SDK does not raise on a Responses `error` event: the stream yields it and ends.
    events = list(oai.responses.create(model=GPT, input="hi", stream=True))
    assert events[-1].type == "error" and "response.completed" not in {e.type for e in events}
    log = fake_provider.requests
    assert [e["outcome"] for e in log] == ["error"] * 3
    assert log[0]["chunks_sent"] == 1 + 3 + 1  # role chunk, half the words, error
    assert log[1]["usage"] is not None and log[1]["usage"]["output_tokens"] == 1  # only message_start got out


def test_cut_drops_the_connection_without_a_terminator(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.set_flags("cut")
    seen: list[str | None] = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in oai.chat.completions.create(model=GPT, messages=QUESTION, stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", *WORDS[:3]]
    with pytest.raises(openai.APIConnectionError):  # non-stream: half a JSON body, then FIN
        oai.chat.completions.create(model=GPT, messages=QUESTION)
    assert [e["outcome"] for e in fake_provider.requests] == ["error", "error"]


def test_break_then_close_is_logged_as_client_disconnected(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.reply = LONG_REPLY
    fake_provider.set_flags("slow")
    stream = oai.chat.completions.create(model=GPT, messages=QUESTION, stream=True)
    for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    stream.close()

    entry = fake_provider.wait_for_outcome(0)
    assert entry["outcome"] == "client_disconnected"
    assert entry["chunks_sent"] < 1 + 40 + 1  # role chunk, 40 words, finish chunk: not all were sent
    assert entry["usage"] is None


async def test_async_client_stream_with_usage_and_early_close(fake_provider: FakeProvider) -> None:
    http = openai.DefaultAsyncHttpxClient(verify=False)
    client = openai.AsyncOpenAI(
        base_url=fake_provider.openai_base_url, api_key="t", max_retries=0, http_client=http
    )
    try:
        stream = await client.chat.completions.create(
            model=GPT,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == count_message_tokens(QUESTION, GPT)

        fake_provider.reply = LONG_REPLY
        fake_provider.set_flags("slow")
        async with await client.chat.completions.create(
            model=GPT,
            messages=QUESTION,
            stream=True,
        ) as early:
            async for _ in early:
                break
    finally:
        await client.close()
    assert fake_provider.wait_for_outcome(1)["outcome"] == "client_disconnected"


# -- tool calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_tool_loop_calls_each_tool_once_then_answers(
    fake_provider: FakeProvider, oai: openai.OpenAI, stream: bool
) -> None:
    tools = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather and time in Paris?"}]
    calls = []
    for _ in range(3):
        if stream:
            with oai.chat.completions.stream(
                model=GPT,
                messages=messages,
                tools=tools,
                stream_options={"include_usage": True},
            ) as s:
                completion = s.get_final_completion()
        else:
            completion = oai.chat.completions.create(model=GPT, messages=messages, tools=tools)
        message = completion.choices[0].message
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == count_message_tokens(messages, GPT) + tools_tokens(
            tools, GPT
        )
        if not message.tool_calls:
            assert message.content == DEFAULT_REPLY
            assert completion.usage.completion_tokens == count_tokens(DEFAULT_REPLY, GPT)
            break
        assert completion.choices[0].finish_reason == "tool_calls"
        [tc] = message.tool_calls
        assert tc.type == "function"
        calls.append((tc.function.name, json.loads(tc.function.arguments)))
        expected = count_tokens(tc.function.name, GPT) + count_tokens(tc.function.arguments, GPT)
        assert completion.usage.completion_tokens == expected
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": tc.id, "content": "sunny, 21 C"})
    assert calls == [("get_weather", WEATHER_ARGS), ("get_time", {"tz": "Paris"})]
    assert len(fake_provider.requests) == 3


def test_anthropic_tool_loop_streams_input_json(
    fake_provider: FakeProvider, claude: anthropic.Anthropic
) -> None:
    tools = [{"name": t["name"], "input_schema": t["parameters"]} for t in (WEATHER, TIME)]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather and time in Paris?"}]
    calls = []
    for _ in range(3):
        with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=messages, tools=tools) as s:
            final = s.get_final_message()
        if final.stop_reason != "tool_use":
            assert final.content[0].type == "text" and final.content[0].text == DEFAULT_REPLY
            break
        [block] = final.content
        assert block.type == "tool_use"
        calls.append((block.name, block.input))
        arguments = json.dumps(block.input)  # the exact JSON text that was streamed
        assert final.usage.output_tokens == count_tokens(block.name, CLAUDE) + count_tokens(arguments, CLAUDE)
        messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True)]})
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "ok"}]}
        )
    assert calls == [("get_weather", WEATHER_ARGS), ("get_time", {"tz": "Paris"})]


def test_responses_function_call_then_text(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    tools = [{"type": "function", "name": WEATHER["name"], "parameters": WEATHER["parameters"]}]
    first = oai.responses.create(model=GPT, input="Weather?", tools=tools)
    [call] = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == WEATHER_ARGS
    items = [
        {"role": "user", "content": "Weather?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = list(oai.responses.create(model=GPT, input=items, tools=tools, stream=True))
    completed = second[-1]
    assert completed.type == "response.completed" and completed.response.output_text == DEFAULT_REPLY
    # The function call in the history counts as the same call in a chat history does.
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "content": "sunny"},
    ]
    expected = count_message_tokens(history, GPT) + count_tokens(json.dumps(tools, separators=(",", ":")), GPT)
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == expected


# -- control surface ------------------------------------------------------------------------------


def test_headers_override_reply_and_add_flags_for_one_request(
    fake_provider: FakeProvider, oai: openai.OpenAI
) -> None:
    fake_provider.set_flags("slow")
    r = oai.chat.completions.create(
        model=GPT,
        messages=QUESTION,
        extra_headers={"x-fake-reply": "Lyon.", "x-fake-flags": "fulldelta"},
    )
    assert r.choices[0].message.content == "Lyon."
    assert r.usage is not None and r.usage.completion_tokens == count_tokens("Lyon.", GPT)
    oai.chat.completions.create(model=GPT, messages=QUESTION)
    assert [e["flags"] for e in fake_provider.requests] == [["fulldelta", "slow"], ["slow"]]
    fake_provider.reset()
    assert fake_provider.requests == [] and fake_provider.flags == frozenset()


def test_unknown_flags_are_rejected(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    with pytest.raises(ValueError, match="nope"):
        fake_provider.set_flags("slow,nope")
    with pytest.raises(openai.BadRequestError, match="nope"):
        oai.chat.completions.create(
            model=GPT,
            messages=QUESTION,
            extra_headers={"x-fake-flags": "nope"},
        )


def test_unknown_path_is_a_404_in_the_api_format(fake_provider: FakeProvider) -> None:
    r = httpx.post(fake_provider.base_url + "/chat/completions", json={"model": GPT})  # missing /v1
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    assert fake_provider.requests[0]["outcome"] == "error"


def test_http_log_reset_and_config_endpoints(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    oai.embeddings.create(model=EMBED, input="x")
    with urllib.request.urlopen(fake_provider.base_url + "/_log") as resp:
        assert json.load(resp) == fake_provider.requests

    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(fake_provider.base_url + path, data=json.dumps(body).encode())
        with urllib.request.urlopen(request) as resp:
            return json.load(resp)

    assert post("/_reset", {}) == {"ok": True, "flags": []}
    assert fake_provider.requests == []
    assert post("/_config", {"flags": "slow", "reply": "Hi.", "cached_tokens": 1}) == {
        "ok": True,
        "flags": ["slow"],
    }
    assert (fake_provider.reply, fake_provider.cached_tokens, fake_provider.flags) == ("Hi.", 1, {"slow"})


def test_concurrent_requests_are_each_logged(fake_provider: FakeProvider, oai: openai.OpenAI) -> None:
    def ask(i: int) -> str | None:
        return oai.chat.completions.create(model=f"gpt-4o-{i}", messages=QUESTION).model

    with ThreadPoolExecutor(8) as pool:
        models = list(pool.map(ask, range(16)))
    assert models == [f"gpt-4o-{i}" for i in range(16)]
    log = fake_provider.requests
    assert sorted(e["model"] for e in log) == sorted(models)
    assert all(e["outcome"] == "completed" for e in log)


async def test_a_burst_of_150_simultaneous_connections_is_fully_served(fake_provider: FakeProvider) -> None:
    # A listen backlog too small for this made the kernel reset connections (seen as httpx.ReadError).
    body = json.dumps({"model": GPT, "messages": QUESTION}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake_provider.port)
        writer.write(request)
        await writer.drain()
        status = (await reader.read()).split(b" ", 2)[1]
        writer.close()
        return status

    statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(150))), timeout=20)
    assert statuses == [b"200"] * 150
    assert len(fake_provider.requests) == 150


def test_stop_is_quick_with_idle_and_half_sent_connections() -> None:
    provider = FakeProvider().start()
    idle = socket.create_connection(("127.0.0.1", provider.port))
    partial = socket.create_connection(("127.0.0.1", provider.port))
    partial.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.05)  # let both handler threads block in recv()
    started = time.monotonic()
    provider.stop()
    assert time.monotonic() - started < 0.5
    assert provider.requests == []  # the truncated request is not logged
    idle.close()
    partial.close()
    with pytest.raises(RuntimeError):
        provider.base_url  # noqa: B018


def test_cli_runs_in_the_foreground_and_prints_the_base_url() -> None:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), str(root / "integrations"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenspy.testing", "--port", "0", "--flags", "slow"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base_url + "/_log") as resp:
            assert json.load(resp) == []
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
