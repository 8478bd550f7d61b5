"""A call made inside another call's stream is part of it: one model invocation, one record.

A CustomLLM's `astream_chat`/`astream_complete` (and a wrapper LLM's stream over a real LLM) call
the inner method only when their generator is read, after LlamaIndex has exited the outer span: the
inner span has no parent linking it to the outer call. Calls beside a stream stay calls of their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from li_helpers import MODEL, assert_matches, logged, openai_llm
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ToolCallBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import (
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
    MockLLM,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI
from pydantic import BaseModel
from test_llamaindex_chunks import PROMPT, QUESTION

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_message_tokens, count_tokens, count_tool_tokens


def usage(record: tokenspy.CallRecord) -> tuple[Any, ...]:
    return record.model, record.input_tokens, record.output_tokens, record.streamed, record.usage_source


class Wrapper(CustomLLM):
    """A CustomLLM answering with another LLM: its streams read the inner LLM's stream lazily."""

    inner: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()  # model "unknown": the inner call's served model prices the record

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.inner.complete(prompt).text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            for chunk in self.inner.stream_complete(prompt):
                yield CompletionResponse(text=chunk.text, delta=chunk.delta)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncIterator[CompletionResponse]:
            await asyncio.sleep(0)  # the inner call starts after a real suspension of the generator
            async for chunk in await self.inner.astream_complete(prompt):
                yield CompletionResponse(text=chunk.text, delta=chunk.delta)

        return gen()


class Blocking(CustomLLM):
    """A CustomLLM whose stream waits inside its generator until `release` is set."""

    entered: Any = None
    release: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="done")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            self.entered.set()
            self.release.wait(10)
            yield CompletionResponse(text="done", delta="done")

        return gen()


# -- a CustomLLM's async streams --------------------------------------------------------------------

@pytest.mark.parametrize("method", ["astream_chat", "astream_complete"])
async def test_a_custom_llms_async_stream_is_one_call(global_handler: TokenSpyHandler, method: str) -> None:
    llm = MockLLM(max_tokens=5)
    arg: Any = QUESTION if method == "astream_chat" else "What is the capital of France?"
    text = "".join([c.delta or "" async for c in await getattr(llm, method)(arg)])
    [record] = tokenspy.calls()  # astream_* -> stream_* (-> stream_complete): one model call
    prompt = (count_message_tokens(PROMPT, None) if method == "astream_chat"
              else count_tokens("What is the capital of France?", None))
    assert usage(record) == (None, prompt, 5, True, "estimated")
    assert count_tokens(text, None) == 5
    assert not TAP._llm and not TAP._completions


async def test_async_streams_opened_together_stay_two_calls(global_handler: TokenSpyHandler) -> None:
    # The second stream's call is the active one while the first is read: the first one's inner
    # call still joins the first, the stream whose generator is running it.
    llm = MockLLM(max_tokens=3)
    chat = await llm.astream_chat(QUESTION)
    completion = await MockLLM(max_tokens=4).astream_complete("Go on")
    first = await chat.__anext__()
    assert first.delta
    async for _ in completion:
        pass
    async for _ in chat:
        pass
    second, first_record = tokenspy.calls()
    assert usage(first_record) == (None, count_message_tokens(PROMPT, None), 3, True, "estimated")
    assert usage(second) == (None, count_tokens("Go on", None), 4, True, "estimated")


async def test_a_call_made_while_reading_a_stream_is_a_call_of_its_own(global_handler: TokenSpyHandler) -> None:
    async for _ in await MockLLM(max_tokens=3).astream_chat(QUESTION):
        await MockLLM(max_tokens=2).acomplete("Aside")  # the loop body, not the stream's generator
    records = tokenspy.calls()
    assert [r.output_tokens for r in records] == [2, 2, 2, 3]


def test_a_stream_running_in_another_thread_does_not_absorb_this_threads_call(
        global_handler: TokenSpyHandler) -> None:
    pending = MockLLM(max_tokens=2).stream_complete("Later")  # keeps a call active in this thread
    blocking = Blocking(entered=threading.Event(), release=threading.Event())
    worker = threading.Thread(target=lambda: list(blocking.stream_complete("Wait")))
    worker.start()
    try:
        assert blocking.entered.wait(10)  # its generator is running, in the worker
        MockLLM(max_tokens=4).complete("Meanwhile")
    finally:
        blocking.release.set()
        worker.join(10)
    for _ in pending:
        pass
    records = tokenspy.calls()
    assert sorted(r.output_tokens for r in records) == [1, 2, 4]


# -- a wrapper LLM streaming from a real one ------------------------------------------------------------

@pytest.mark.parametrize("method", ["complete", "stream_complete", "stream_chat"])
def test_a_wrapper_llm_over_openai_is_one_call_with_the_inner_usage(global_handler: TokenSpyHandler,
                                                                    fp: FakeProvider, method: str) -> None:
    wrapper = Wrapper(inner=openai_llm(fp))
    if method == "complete":
        wrapper.complete("Capital of France?")
    elif method == "stream_complete":
        list(wrapper.stream_complete("Capital of France?"))
    else:
        list(wrapper.stream_chat([ChatMessage(role="user", content="Capital of France?")]))
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.model, record.streamed) == (MODEL, method != "complete")
    assert_matches(record, sent)  # the inner call's exact usage, priced by the model it served


def test_a_wrapper_llm_in_a_streaming_chat_engine_is_one_call(global_handler: TokenSpyHandler,
                                                              fp: FakeProvider) -> None:
    # The chat engine reads the stream in its worker thread (LlamaIndex's Thread copies the context).
    engine = SimpleChatEngine.from_defaults(llm=Wrapper(inner=openai_llm(fp)))
    for _ in engine.stream_chat("Capital of France?").response_gen:
        pass
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert record.span_path == ("SimpleChatEngine.chat",)
    assert_matches(record, sent)


async def test_an_async_wrapper_stream_is_one_call(global_handler: TokenSpyHandler, fp: FakeProvider) -> None:
    async for _ in await Wrapper(inner=openai_llm(fp)).astream_complete("Capital of France?"):
        pass
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.model, record.streamed, record.usage_source) == (MODEL, True, "provider")
    assert_matches(record, sent)


def test_a_wrapper_stream_with_the_sdk_layer_below_is_one_call(global_handler: TokenSpyHandler,
                                                               fp: FakeProvider, sdk_layer: None) -> None:
    wrapper = Wrapper(inner=openai_llm(fp, stream_usage=False))  # only the SDK layer has usage
    with tokenspy.session("wrapped"):
        list(wrapper.stream_complete("Capital of France?"))
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.model, record.usage_source, record.span_path) == (MODEL, "provider", ("wrapped",))
    assert (record.input_tokens, record.output_tokens) == (sent["prompt_tokens"], sent["completion_tokens"])


# -- tool definitions count in an estimated prompt ------------------------------------------------------

def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.mark.parametrize("path", ["dispatcher", "callbacks"])
def test_offered_tools_count_in_an_estimated_input(fp: FakeProvider, handler: TokenSpyHandler, path: str) -> None:
    if path == "dispatcher":
        tokenspy.set_handler(handler)
        llm: OpenAI = openai_llm(fp, stream_usage=False)
    else:
        TAP.uninstall()  # the legacy callbacks alone
        llm = openai_llm(fp, stream_usage=False, callback_manager=CallbackManager([handler]))
    tool = FunctionTool.from_defaults(multiply)
    for _ in llm.stream_chat_with_tools([tool], user_msg="What is 6 times 7?"):  # no usage in the stream
        pass
    llm.chat_with_tools([tool], user_msg="What is 6 times 7?")  # the same request, usage reported
    estimated, reported = tokenspy.calls()
    assert (estimated.usage_source, reported.usage_source) == ("estimated", "provider")
    prompt = [{"role": "user", "content": "What is 6 times 7?"}]
    tools = llm._prepare_chat_with_tools([tool])["tools"]
    assert estimated.input_tokens == count_message_tokens(prompt, MODEL) + count_tool_tokens(tools, MODEL)
    # The fake provider bills the tools it was sent as their compact JSON: the estimate is exact.
    assert estimated.input_tokens == reported.input_tokens == logged(fp)[1]["prompt_tokens"]


# -- tool calls in the history count in an estimated input ------------------------------------------

def _history(shape: str) -> list[ChatMessage]:
    """A chat after a tool step: the assistant's tool call, then the tool's result."""
    if shape == "blocks":  # how llama-index-core keeps them
        call = ChatMessage(role="assistant", blocks=[
            ToolCallBlock(tool_call_id="call_1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7})])
    else:  # an OpenAI response's message, as older llama-index versions keep it
        call = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a":6,"b":7}'}}]})
    return [ChatMessage(role="user", content="What is 6 times 7?"), call,
            ChatMessage(role="tool", content="42", additional_kwargs={"tool_call_id": "call_1"})]


@pytest.mark.parametrize("shape", ["blocks", "additional_kwargs"])
def test_tool_calls_in_the_history_count_in_an_estimated_input(fp: FakeProvider, global_handler: TokenSpyHandler,
                                                               shape: str) -> None:
    llm = openai_llm(fp, stream_usage=False)
    for _ in llm.stream_chat(_history(shape)):  # no usage in the stream: estimated
        pass
    llm.chat(_history(shape))  # the same request, usage reported
    estimated, reported = tokenspy.calls()
    assert (estimated.usage_source, reported.usage_source) == ("estimated", "provider")
    # The tool call is sent as OpenAI's `tool_calls` (non-string arguments as `json.dumps`), and
    # billed: the estimate counts it the same way, so it is exact.
    assert estimated.input_tokens == reported.input_tokens == logged(fp)[1]["prompt_tokens"]
    without_call = count_message_tokens([{"role": "user", "content": "What is 6 times 7?"},
                                         {"role": "assistant", "content": ""},
                                         {"role": "tool", "content": "42"}], MODEL)
    assert estimated.input_tokens > without_call


async def test_a_function_agents_second_step_is_estimated_with_the_tool_call(fp: FakeProvider,
                                                                           global_handler: TokenSpyHandler) -> None:
    for stream_usage in (False, True):  # the same run, estimated then reported
        llm = openai_llm(fp, stream_usage=stream_usage)
        agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=llm)
        await agent.run("What is 6 times 7?")
    records = tokenspy.calls()
    assert [r.usage_source for r in records] == ["estimated"] * 2 + ["provider"] * 2
    billed = [usage["prompt_tokens"] for usage in logged(fp)[2:]]
    assert [r.input_tokens for r in records[:2]] == [r.input_tokens for r in records[2:]] == billed


# -- a StructuredLLM's stream: the text the model streamed, not the parsed object's JSON ------------

class City(BaseModel):
    name: str
    population: int


CITY_REPLY = '{"name": "Paris", "population": 2}'  # spaced: its compact re-serialization is shorter


@pytest.mark.parametrize("method", ["stream_chat", "astream_chat"])
async def test_a_structured_llms_stream_is_estimated_from_the_text_the_model_streamed(
        global_handler: TokenSpyHandler, method: str) -> None:
    with FakeProvider(reply=CITY_REPLY) as fp:
        for stream_usage in (False, True):  # estimated, then the same request with usage reported
            structured = openai_llm(fp, stream_usage=stream_usage).as_structured_llm(City)
            if method == "stream_chat":
                chunks = list(structured.stream_chat([ChatMessage(role="user", content="Paris")]))
            else:
                chunks = [c async for c in await structured.astream_chat([ChatMessage(role="user", content="Paris")])]
            assert chunks[-1].message.content == City(name="Paris", population=2).model_dump_json()
        billed = logged(fp)[1]
    estimated, reported = tokenspy.calls()  # one record per request: the inner call is merged
    assert (estimated.usage_source, estimated.streamed, reported.usage_source) == ("estimated", True, "provider")
    assert estimated.output_tokens == reported.output_tokens == billed["completion_tokens"]
    assert estimated.output_tokens == count_tokens(CITY_REPLY, MODEL)
    assert estimated.input_tokens == billed["prompt_tokens"]


class ChatWrapper(Wrapper):
    """A wrapper whose chat stream re-yields the inner LLM's chat stream, delta for delta."""

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> Iterator[ChatResponse]:
            for chunk in self.inner.stream_chat(messages):
                yield ChatResponse(message=chunk.message, delta=chunk.delta)

        return gen()


def test_a_wrapper_repeating_a_chat_stream_counts_its_text_once(global_handler: TokenSpyHandler,
                                                                fp: FakeProvider) -> None:
    wrapper = ChatWrapper(inner=openai_llm(fp, stream_usage=False))
    text = "".join(c.delta or "" for c in wrapper.stream_chat([ChatMessage(role="user", content="Hi")]))
    [record] = tokenspy.calls()
    assert (record.usage_source, record.model) == ("estimated", MODEL)
    assert text == fp.reply and record.output_tokens == count_tokens(fp.reply, MODEL)


# -- a StructuredLLM's answer that fails validation ---------------------------------------------

class Capital(BaseModel):
    name: str


def test_a_structured_llm_answer_failing_validation_is_complete(global_handler: TokenSpyHandler) -> None:
    from pydantic import ValidationError

    with FakeProvider(reply="not json") as fp:
        llm = openai_llm(fp)
        with pytest.raises(ValidationError):
            llm.structured_predict(Capital, PromptTemplate("Capital of France?"))
        with pytest.raises(ValidationError):
            llm.as_structured_llm(Capital).chat([ChatMessage(role="user", content="Capital of France?")])
        sent = logged(fp)
    predicted, structured = tokenspy.calls()
    # The model answered in full (and was billed); what failed is LlamaIndex's parsing of it, after
    # the model call ended: recorded as structured_predict records it, not as a call cut short.
    for record, usage in zip((predicted, structured), sent, strict=True):
        assert (record.status, record.partial, record.streamed, record.error) == ("finished", False, False, None)
        assert_matches(record, usage)


def test_a_structured_llm_stream_failing_mid_way_stays_partial(global_handler: TokenSpyHandler,
                                                               fp: FakeProvider) -> None:
    from openai import APIError

    fp.set_flags("midstream")
    with pytest.raises(APIError):
        list(openai_llm(fp).as_structured_llm(City).stream_chat([ChatMessage(role="user", content="Paris")]))
    [record] = tokenspy.calls()
    assert (record.status, record.partial, record.streamed) == ("failed", True, True)
    assert record.error is not None and record.error.startswith("APIError")
