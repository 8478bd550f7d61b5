"""A wrapper LLM calling its model more than once made that many provider calls: one record each.

Only the first model call inside a wrapper's call is that call (its record keeps the first call's
numbers); a later one (a draft, then a refine) is a provider call of its own, with or without the SDK
layer underneath. The single nestings stay one record: a wrapper over a wrapper, a fallback after a
request that failed unbilled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from li_helpers import MODEL, assert_matches, logged, openai_llm
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from openai import RateLimitError

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

PROMPT = "Capital of France?"


class Refine(CustomLLM):
    """Asks its model for a draft, then asks it again to refine the draft."""

    inner: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="refine")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        draft = self.inner.complete(prompt)
        final = self.inner.complete("Refine: " + draft.text)
        return CompletionResponse(text=final.text, raw=final.raw)  # the last answer, usage included

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        draft = await self.inner.acomplete(prompt)
        final = await self.inner.acomplete("Refine: " + draft.text)
        return CompletionResponse(text=final.text, raw=final.raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            draft = "".join(c.delta or "" for c in self.inner.stream_complete(prompt))
            text = ""
            for chunk in self.inner.stream_complete("Refine: " + draft):
                text += chunk.delta or ""
                yield CompletionResponse(text=text, delta=chunk.delta)

        return gen()


class RefineChat(Refine):
    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        draft = self.inner.chat(messages)
        return self.inner.chat([*messages, draft.message, ChatMessage(role="user", content="Sure?")])


class Fallback(CustomLLM):
    """Answers with `backup` when `primary` fails."""

    primary: Any = None
    backup: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        try:
            return self.primary.complete(prompt)
        except RateLimitError:
            return self.backup.complete(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class Passthrough(Fallback):
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.primary.complete(prompt)


def run(method: str, wrapper: Refine) -> None:
    question = [ChatMessage(role="user", content=PROMPT)]
    if method == "complete":
        wrapper.complete(PROMPT)
    elif method == "acomplete":
        asyncio.run(wrapper.acomplete(PROMPT))
    elif method == "stream_complete":
        list(wrapper.stream_complete(PROMPT))
    elif method == "chat":
        wrapper.chat(question)
    elif method == "achat":  # the CustomLLM's own achat runs its acomplete
        asyncio.run(wrapper.achat(question))
    else:  # the CustomLLM's own chat runs its stream_complete: the model calls are one level deeper
        list(wrapper.stream_chat(question))


@pytest.mark.parametrize("layers", ["llamaindex", "llamaindex + sdk"])
@pytest.mark.parametrize(("method", "wrapper"), [
    ("complete", Refine), ("acomplete", Refine), ("stream_complete", Refine), ("chat", RefineChat),
    ("stream_chat", Refine), ("chat", Refine), ("achat", Refine),
])
def test_a_wrapper_calling_its_model_twice_makes_two_records_of_their_own_usage(
        fp: FakeProvider, global_handler: TokenSpyHandler, method: str, wrapper: type[Refine], layers: str) -> None:
    if layers == "llamaindex + sdk":
        tokenspy.init(auto_instrument=True)
    with tokenspy.session("wrapped"):
        run(method, wrapper(inner=openai_llm(fp)))
    draft, final = logged(fp)
    assert draft != final  # the refine request carries the draft: more prompt tokens
    refined, wrapped = tokenspy.calls()  # the refine call ends first, inside the wrapper's call
    assert_matches(wrapped, draft)
    assert_matches(refined, final)
    assert [(r.model, r.usage_source, r.span_path) for r in (wrapped, refined)] == [
        (MODEL, "provider", ("wrapped",))] * 2


def test_a_wrapper_over_a_wrapper_is_one_call(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    Passthrough(primary=Passthrough(primary=openai_llm(fp))).complete(PROMPT)
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert record.model == MODEL
    assert_matches(record, sent)


def test_a_fallback_after_an_unbilled_failure_is_the_wrappers_call(fp: FakeProvider,
                                                                   global_handler: TokenSpyHandler) -> None:
    primary = openai_llm(fp, default_headers={"x-fake-flags": "http429"})
    Fallback(primary=primary, backup=openai_llm(fp)).complete(PROMPT)
    assert [entry["usage"] is None for entry in fp.requests] == [True, False]
    [record] = tokenspy.calls()
    assert (record.model, record.status) == (MODEL, "finished")
    assert_matches(record, logged(fp)[-1])


class ThenLangChain(Fallback):
    """Drafts with a LlamaIndex LLM, refines with a LangChain chat model."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        draft = self.primary.complete(prompt)
        return CompletionResponse(text=self.backup.invoke("Refine: " + draft.text).content)


def test_a_wrappers_second_call_through_langchain_is_a_call_of_its_own(fp: FakeProvider,
                                                                        global_handler: TokenSpyHandler) -> None:
    from langchain_openai import ChatOpenAI

    import tokenspy.langchain

    tokenspy.set_handler(tokenspy.langchain.TokenSpyHandler())
    refiner = ChatOpenAI(model=MODEL, base_url=fp.openai_base_url, api_key="test", max_retries=0)
    ThenLangChain(primary=openai_llm(fp), backup=refiner).complete(PROMPT)
    draft, final = logged(fp)
    refined, wrapped = tokenspy.calls()
    assert_matches(wrapped, draft)
    assert_matches(refined, final)
