"""A model that calls another model (a router or wrapper model): one provider call, one record."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from lc_helpers import from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


class Router(BaseChatModel):
    """Delegates to another chat model, handing it its callbacks (or not)."""

    inner: Any
    child_callbacks: bool = True

    @property
    def _llm_type(self) -> str:
        return "router"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        config: Any = {"callbacks": run_manager.handlers} if self.child_callbacks and run_manager else {}
        return ChatResult(generations=[ChatGeneration(message=self.inner.invoke(messages, config))])


@pytest.mark.parametrize("child_callbacks", [True, False])
@pytest.mark.parametrize("layers", ["langchain_only", "with_sdk_layer"], indirect=True)
def test_a_router_model_and_the_model_it_calls_make_one_record(
        fp: FakeProvider, handler: TokenSpyHandler, layers: str, child_callbacks: bool) -> None:
    router = Router(inner=openai_chat(fp, stream_usage=True), child_callbacks=child_callbacks)
    tokenspy.set_handler(handler)
    with tokenspy.session("req") as s:
        router.invoke("hi")
    (entry,) = fp.requests
    (record,) = tokenspy.calls()
    assert from_log(entry).matches(record)
    assert record.usage_source == "provider"
    assert s.calls == 1
    assert handler.open_runs == 0


def test_a_llamaindex_llm_run_inside_a_langchain_model_is_one_record(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI as LlamaOpenAI

    from tokenspy.llamaindex import TokenSpyHandler as LlamaHandler

    inner = LlamaOpenAI(model="gpt-4o", api_base=fp.openai_base_url, api_key="sk-x", max_retries=0)

    class Wrapped(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "llamaindex-wrapper"

        def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                      run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
            answer = inner.chat([ChatMessage(role="user", content=str(m.content)) for m in messages])
            return ChatResult(generations=[ChatGeneration(message=AIMessage(str(answer.message.content)))])

    tokenspy.set_handler(LlamaHandler())
    tokenspy.set_handler(handler)
    with tokenspy.session("req") as s:
        Wrapped().invoke("hi")
    (entry,) = fp.requests
    (record,) = tokenspy.calls()
    assert from_log(entry).matches(record)
    assert s.calls == 1


def test_a_langchain_model_run_inside_a_llamaindex_llm_is_one_record(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    from tokenspy.llamaindex import TokenSpyHandler as LlamaHandler

    chat = openai_chat(fp, stream_usage=True)

    class LangChainBacked(CustomLLM):  # what llama-index-llms-langchain's LangChainLLM does
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=str(chat.invoke(prompt).content))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError

    tokenspy.set_handler(LlamaHandler())
    tokenspy.set_handler(handler)
    with tokenspy.session("req") as s:
        LangChainBacked().complete("hi")
    (entry,) = fp.requests
    (record,) = tokenspy.calls()
    assert from_log(entry).matches(record)
    assert s.calls == 1


def test_a_llamaindex_llm_called_in_a_langgraph_node_is_under_the_node(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    from langchain_core.messages import AIMessage as Message
    from langgraph.graph import END, START, MessagesState, StateGraph
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI as LlamaOpenAI

    from tokenspy.llamaindex import TokenSpyHandler as LlamaHandler

    llama = LlamaOpenAI(model="gpt-4o-mini", api_base=fp.openai_base_url, api_key="sk-x", max_retries=0)

    def research(state: MessagesState) -> dict[str, list[Message]]:
        answer = llama.chat([ChatMessage(role="user", content="hi")])
        return {"messages": [Message(str(answer.message.content))]}

    graph = StateGraph(MessagesState)
    graph.add_node("research", research)
    graph.add_edge(START, "research")
    graph.add_edge("research", END)
    tokenspy.set_handler(LlamaHandler())
    tokenspy.set_handler(handler)
    with tokenspy.session("req"):
        graph.compile().invoke({"messages": [("human", "x")]})
    (record,) = tokenspy.calls()
    assert record.span_path == ("req", "LangGraph", "research")
    assert from_log(fp.requests[0]).matches(record)


@pytest.mark.parametrize("layers", ["langchain_only", "with_sdk_layer"], indirect=True)
def test_a_router_calling_two_models_records_each_provider_call_once(
        fp: FakeProvider, handler: TokenSpyHandler, layers: str) -> None:
    classifier, target = openai_chat(fp, model="gpt-4o-mini", stream_usage=True), openai_chat(fp, stream_usage=True)

    class TwoStep(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "router"

        def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                      run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
            classifier.invoke("classify: " + str(messages[-1].content))
            return ChatResult(generations=[ChatGeneration(message=target.invoke(messages))])

    tokenspy.set_handler(handler)
    TwoStep().invoke("What is the capital of France?")
    records = sorted(tokenspy.calls(), key=lambda r: r.id)
    assert len(records) == len(fp.requests) == 2
    for entry, record in zip(fp.requests, records, strict=True):
        assert from_log(entry).matches(record), (entry, record)
    assert handler.open_runs == 0


def test_a_judge_model_called_from_a_callbacks_on_llm_end_is_its_own_record(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    main, judge = openai_chat(fp, stream_usage=True), openai_chat(fp, model="gpt-4o-mini")

    class Judge(BaseCallbackHandler):
        busy = False

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            if not self.busy:  # the judge's own end comes here too
                self.busy = True
                judge.invoke("Rate this answer: " + response.generations[0][0].text)

    tokenspy.set_handler(handler)  # after the user's handler: it runs once the judge has run
    main.invoke("What is the capital of France?", config={"callbacks": [Judge()]})
    records = sorted(tokenspy.calls(), key=lambda r: r.id)
    assert [r.request_model for r in records] == ["gpt-4o", "gpt-4o-mini"]
    by_model = {e["model"]: e for e in fp.requests}
    for record in records:
        assert from_log(by_model[str(record.request_model)]).matches(record)
