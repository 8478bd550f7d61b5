"""A completion method on a chat model: the prompt is estimated as the chat message actually sent.

llama-index-llms-openai serves `complete`/`stream_complete` (and the async forms) of a chat model
through the chat endpoint, as one user message: the provider bills the per-message framing, which
a bare-string estimate misses. The numbers to match are the fake provider's own count for the same
request, read from a non-stream call (a stream without `include_usage` reports none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from li_helpers import MODEL, logged, openai_llm
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.llms.openai import OpenAI

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.testing import FakeProvider
from tokenspy_core import config
from tokenspy_core.tokenizer import count_tokens

# Long enough that the chat framing (a few tokens) is a small part of the estimate, as in real use.
PROMPT = "Name the capital of France, then spell it backwards."
SYSTEM = "You answer in one short sentence."


def billed_prompt(fp: FakeProvider, messages: list[ChatMessage]) -> int:
    """What the provider bills for these messages: one non-stream chat, which reports usage."""
    openai_llm(fp).chat(messages)
    return int(logged(fp)[-1]["prompt_tokens"])


def last_call() -> tokenspy.CallRecord:
    return tokenspy.calls()[-1]


async def read(llm: Any, method: str, prompt: str) -> None:
    if method == "stream_complete":
        for _ in llm.stream_complete(prompt):
            pass
    else:
        async for _ in await llm.astream_complete(prompt):
            pass


@pytest.mark.parametrize("method", ["stream_complete", "astream_complete"])
async def test_stream_complete_without_stream_usage_counts_the_chat_framing(
        fp: FakeProvider, global_handler: TokenSpyHandler, method: str) -> None:
    await read(openai_llm(fp, stream_usage=False), method, PROMPT)
    record = last_call()
    assert record.usage_source == "estimated"
    user = [ChatMessage(role="user", content=PROMPT)]
    expected = billed_prompt(fp, user)
    assert expected > count_tokens(PROMPT, MODEL)  # the framing is what the bare string missed
    assert record.input_tokens == expected


def test_stream_complete_estimate_equals_stream_chat_of_the_same_text(
        fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp, stream_usage=False)
    for _ in llm.stream_chat([ChatMessage(role="user", content=PROMPT)]):
        pass
    for _ in llm.stream_complete(PROMPT):
        pass
    chat, complete = tokenspy.calls()
    assert complete.input_tokens == chat.input_tokens


@pytest.mark.parametrize("method", ["complete", "acomplete"])
async def test_complete_records_the_prompt_as_the_one_user_message_sent(
        fp: FakeProvider, global_handler: TokenSpyHandler, method: str) -> None:
    # OpenAI's completion path does not send the system prompt (only `predict`/`chat` callers add
    # it): the recorded prompt, and an estimate from it, must not either.
    config.capture_content = True  # reset by the suite
    llm = openai_llm(fp, system_prompt=SYSTEM)
    if method == "complete":
        llm.complete(PROMPT)
    else:
        await llm.acomplete(PROMPT)
    record = last_call()
    assert record.prompt == [{"role": "user", "content": PROMPT}]
    assert record.input_tokens == logged(fp)[-1]["prompt_tokens"]
    assert billed_prompt(fp, [ChatMessage(role="user", content=PROMPT)]) == record.input_tokens


def test_callback_path_alone_counts_the_chat_framing(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    TAP.uninstall()  # the legacy callbacks are all there is
    for _ in openai_llm(fp, stream_usage=False, handlers=[handler]).stream_complete(PROMPT):
        pass
    [record] = tokenspy.calls()
    assert record.usage_source == "estimated"
    assert record.input_tokens == billed_prompt(fp, [ChatMessage(role="user", content=PROMPT)])


class ChatBacked(CustomLLM):
    """A chat model whose completions run another LLM's chat, with a system message of its own."""

    inner: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True)  # model "unknown": priced by the inner call's model

    def _messages(self, prompt: str) -> list[ChatMessage]:
        return [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=prompt)]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.inner.chat(self._messages(prompt)).message.content or "")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            for chunk in self.inner.stream_chat(self._messages(prompt)):
                yield CompletionResponse(text=chunk.message.content or "", delta=chunk.delta)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncIterator[CompletionResponse]:
            async for chunk in await self.inner.astream_chat(self._messages(prompt)):
                yield CompletionResponse(text=chunk.message.content or "", delta=chunk.delta)

        return gen()


@pytest.mark.parametrize("method", ["stream_complete", "astream_complete"])
async def test_a_chat_made_inside_a_completion_gives_the_messages_it_sent(
        fp: FakeProvider, global_handler: TokenSpyHandler, method: str) -> None:
    # The nested chat is merged into the completion (one record); its messages, system one
    # included, are what was billed, rather than the completion's own one-message framing.
    await read(ChatBacked(inner=openai_llm(fp, stream_usage=False)), method, PROMPT)
    [record] = tokenspy.calls()
    assert record.usage_source == "estimated" and record.model == MODEL
    sent = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=PROMPT)]
    assert record.input_tokens == billed_prompt(fp, sent)


def test_a_completion_model_keeps_the_bare_prompt(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    # A completion model (not a chat one) is sent the prompt as it is, on the completions endpoint.
    # (max_tokens set: LlamaIndex would otherwise fetch a tiktoken file to size the request.)
    model = "gpt-3.5-turbo-instruct"
    llm = OpenAI(model=model, api_base=fp.openai_base_url, api_key="test", max_retries=0, max_tokens=32)
    assert not llm.metadata.is_chat_model
    for _ in llm.stream_complete(PROMPT):
        pass
    record = last_call()
    assert record.usage_source == "estimated"
    llm.complete(PROMPT)
    assert record.input_tokens == logged(fp, "/v1/completions")[-1]["prompt_tokens"] == count_tokens(PROMPT, model)
