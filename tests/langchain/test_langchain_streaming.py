"""Streamed model runs: time to first token, the streamed flag and the streamed text, from v1 chunks
(`on_llm_new_token`) and from v3 protocol events (`on_stream_event`).

Times are checked by ordering, never against a budget: a probe handler LangChain calls just before
tokenspy's sees the first output no later than tokenspy does, and one called just after it sees the
run start no earlier, so `ttft_s` is at least the time between the two. The fake provider's
`chunk_delay` between the empty opening event and the first content makes that time long.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import anthropic
import openai
import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from lc_helpers import CLAUDE, GPT, anthropic_chat, from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.langchain._extract import content_text
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

DELAY = 0.05


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


# The conversation after the tool ran: the fake answers it with text, tools still offered.
AFTER_TOOL = [HumanMessage("Weather in Paris?"),
              AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"}]),
              ToolMessage("sunny", tool_call_id="toolu_1")]


class Probe(BaseCallbackHandler):
    """When the first run started and when the first output came, as a handler next to tokenspy's sees
    it; and the text deltas of v3 events."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.first_output: float | None = None
        self.event_text: list[str] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, **kwargs: Any) -> None:
        message = getattr(chunk, "message", None)
        if content_text(token) or getattr(message, "tool_call_chunks", None):
            self._output()

    def on_stream_event(self, event: Any, **kwargs: Any) -> None:
        if event.get("event") == "content-block-delta":
            self._output()
            if event["delta"].get("type") == "text-delta":
                self.event_text.append(event["delta"]["text"])
        elif event.get("event") == "content-block-start" and event["content"].get("name"):
            self._output()  # a tool call's start names it

    def _output(self) -> None:
        if self.first_output is None:
            self.first_output = time.perf_counter()


def probed(handler: TokenSpyHandler) -> tuple[Probe, Probe, list[Any]]:
    """(before, after, callbacks): `before` is called before tokenspy's handler, `after` after it."""
    before, after = Probe(), Probe()
    return before, after, [before, handler, after]


def ttft_floor(before: Probe, after: Probe) -> float:
    assert before.first_output is not None and after.started is not None
    return before.first_output - after.started


def models(fp: FakeProvider) -> dict[str, BaseChatModel]:
    return {"chat": openai_chat(fp, stream_usage=True), "responses": openai_chat(fp, use_responses_api=True),
            "anthropic": anthropic_chat(fp)}


# Events the fake sends before the first text, each after `chunk_delay`: the OpenAI role chunk;
# response.created, .in_progress, .output_item.added, .content_part.added; message_start,
# content_block_start, ping.
EMPTY_EVENTS_BEFORE_TEXT = {"chat": 1, "responses": 4, "anthropic": 3}


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
def test_ttft_is_the_first_text_not_the_empty_chunk_that_opens_the_stream(
        fp: FakeProvider, handler: TokenSpyHandler, api: str) -> None:
    fp.chunk_delay = DELAY
    before, after, callbacks = probed(handler)
    text = "".join(content_text(c.content) for c in models(fp)[api].stream("hi", config={"callbacks": callbacks}))
    (record,) = tokenspy.calls()
    assert text == "The capital of France is Paris." and record.streamed
    assert record.ttft_s is not None and record.ttft_s >= ttft_floor(before, after)
    assert record.ttft_s >= EMPTY_EVENTS_BEFORE_TEXT[api] * DELAY
    usage = fp.requests[0]["usage"]
    if api == "responses":  # (from_log reads the chat and Anthropic shapes)
        assert (record.input_tokens, record.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    else:
        assert from_log(fp.requests[0]).matches(record)


@pytest.mark.parametrize("api", ["chat", "anthropic"])
def test_a_tool_call_delta_is_the_first_token_of_a_stream_without_text(
        fp: FakeProvider, handler: TokenSpyHandler, api: str) -> None:
    fp.chunk_delay = DELAY
    before, after, callbacks = probed(handler)
    chunks = list(models(fp)[api].bind_tools([get_weather]).stream("Weather in Paris?",
                                                                   config={"callbacks": callbacks}))
    assert any(c.tool_call_chunks for c in chunks) and not any(content_text(c.content) for c in chunks)
    (record,) = tokenspy.calls()
    assert record.streamed and record.ttft_s is not None and record.ttft_s >= ttft_floor(before, after)


def test_v3_events_of_an_anthropic_agent_with_tools_are_streams(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    # langchain-anthropic fires no on_llm_new_token when tools are offered (list content): only the
    # v3 events say that the call streams and when its first output came.
    fp.chunk_delay = DELAY
    before, after, callbacks = probed(handler)
    agent = create_agent(anthropic_chat(fp), [get_weather])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LangGraph: "the v3 streaming protocol is experimental"
        for _ in agent.stream_events({"messages": [("human", "Weather in Paris?")]},
                                     config={"callbacks": callbacks}, version="v3"):
            pass
    records = tokenspy.calls()
    assert [entry["stream"] for entry in fp.requests] == [True, True]
    assert [r.streamed for r in records] == [True, True]
    assert all(r.ttft_s is not None and r.ttft_s >= DELAY for r in records)  # message_start, then a delay
    assert records[0].ttft_s >= ttft_floor(before, after)  # (the probes saw the first call first)
    assert all(from_log(entry).matches(r) for entry, r in zip(fp.requests, records, strict=True))
    assert handler.open_runs == 0


# Each shape a streamed tool call reaches on_llm_new_token / the v3 events in: an empty `chunk.text`
# (a str subclass) with tool-call chunks (chat), `function_call` blocks (Responses), Anthropic's
# `tool_use` / `input_json_delta` blocks, v1 `tool_call_chunk` blocks.
TOOL_STREAMS = {"chat": {}, "chat-v1": {"output_version": "v1"}, "responses": {"use_responses_api": True},
                "anthropic": {}, "anthropic-v1": {"output_version": "v1"}}


@pytest.mark.parametrize("how", ["invoke", "v3"])
@pytest.mark.parametrize("api", list(TOOL_STREAMS))
def test_a_tool_call_stream_failing_mid_way_counts_the_name_and_arguments_streamed(
        fp: FakeProvider, no_sdk_layer: None, handler: TokenSpyHandler, api: str, how: str) -> None:
    # Neither path hands on_llm_error a partial message (invoke of a streaming model, the v3 events of a
    # stream): what the handler kept of the stream is all there is. The fake fails after `{"city":`.
    make = anthropic_chat if api.startswith("anthropic") else openai_chat
    llm = make(fp, streaming=True, **TOOL_STREAMS[api]).bind_tools([get_weather])  # type: ignore[operator]
    fp.set_flags("midstream")
    # (langchain-openai raises a Responses error event as a ValueError)
    with pytest.raises((openai.APIError, anthropic.APIStatusError, ValueError)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the v3 streaming protocol is experimental"
        if how == "invoke":
            llm.invoke("Weather in Paris?", config={"callbacks": [handler]})
        else:
            for _ in llm.stream_events("Weather in Paris?", config={"callbacks": [handler]}, version="v3"):
                pass
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.streamed) == ("failed", True, True)
    assert record.output_tokens == count_tokens('get_weather{"city":', CLAUDE if make is anthropic_chat else GPT)
    assert handler.open_runs == 0


@pytest.mark.parametrize("api", ["chat", "anthropic"])
def test_v3_events_failing_mid_stream_count_the_streamed_text_once(
        fp: FakeProvider, handler: TokenSpyHandler, api: str) -> None:
    # With tools offered, langchain-openai fires on_llm_new_token and its events repeat the text;
    # langchain-anthropic fires only the events. Either way the text counts once.
    fp.reply = " ".join(["word"] * 40)
    fp.set_flags("midstream")
    before, after, callbacks = probed(handler)
    llm = models(fp)[api].bind_tools([get_weather])
    with pytest.raises((openai.APIError, anthropic.APIStatusError)):
        for _ in llm.stream_events(AFTER_TOOL, config={"callbacks": callbacks}, version="v3"):
            pass
    (record,) = tokenspy.calls()
    streamed_text = "".join(before.event_text)
    assert streamed_text == " ".join(["word"] * 20)  # the first half of the reply
    assert (record.status, record.partial, record.streamed) == ("failed", True, True)
    assert record.output_tokens == count_tokens(streamed_text, GPT if api == "chat" else CLAUDE)
    assert record.ttft_s is not None and record.ttft_s >= ttft_floor(before, after)
    assert handler.open_runs == 0
