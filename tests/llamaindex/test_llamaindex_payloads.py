"""Where usage hides in LlamaIndex responses (reference §5.3/§7): every provider shape, counted once.

llama-index-llms-anthropic does not work with anthropic 2.x, so its response shapes (as observed
with anthropic 0.125) are built here with llama-index's own response types.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from li_helpers import MODEL, assert_matches, logged
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.llms.openai import OpenAIResponses

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler, payloads
from tokenspy.llamaindex.calls import LLMCall
from tokenspy.testing import FakeProvider
from tokenspy_core import Call, Tracker

ANTHROPIC_RAW = {"model": "claude-haiku-4-5", "usage": {
    "input_tokens": 201, "output_tokens": 31, "cache_creation_input_tokens": 50,
    "cache_read_input_tokens": 60}}


def reply(raw: Any = None, extra: dict[str, Any] | None = None,
          message_extra: dict[str, Any] | None = None) -> ChatResponse:
    message = ChatMessage(role="assistant", content="Paris", additional_kwargs=message_extra or {})
    return ChatResponse(message=message, raw=raw, additional_kwargs=extra or {})


def recorded(response: Any, model: str | None = None) -> tokenspy.CallRecord:
    state = LLMCall(Call(Tracker(), model, prompt="Capital of France?"), model)
    state.end(response)
    record = state.call.record
    assert record is not None
    return record


def usage(record: tokenspy.CallRecord) -> tuple[int, int, int, int, int]:
    return (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.cache_write_tokens,
            record.reasoning_tokens)


@pytest.mark.parametrize(("response", "expected"), [
    # Anthropic, non-stream: raw is the dumped Message; its input excludes the cache tokens.
    (reply(ANTHROPIC_RAW), (311, 31, 60, 50, 0)),
    # Anthropic stream, last chunk: raw = dict(message_delta), usage with input patched in, no cache.
    (reply({"type": "message_delta", "usage": SimpleNamespace(
        input_tokens=202, output_tokens=32, cache_creation_input_tokens=None, cache_read_input_tokens=None)}),
     (202, 32, 0, 0, 0)),
    # ... and when message_delta repeats the cumulative cache numbers.
    (reply({"type": "message_delta", "usage": {
        "input_tokens": 202, "output_tokens": 32, "cache_creation_input_tokens": 51,
        "cache_read_input_tokens": 61}}), (314, 32, 61, 51, 0)),
    # Anthropic stream chunk whose raw carries nothing: the message's additional_kwargs usage.
    (reply({"type": "message_stop"}, message_extra={"usage": {"input_tokens": 202, "output_tokens": 32}}),
     (202, 32, 0, 0, 0)),
    # OpenAIResponses stream: the last raw is a ResponseCompletedEvent.
    (reply(SimpleNamespace(type="response.completed", response=SimpleNamespace(model="gpt-4o-mini", usage={
        "input_tokens": 104, "output_tokens": 26, "input_tokens_details": {"cached_tokens": 43},
        "output_tokens_details": {"reasoning_tokens": 8}}))), (104, 26, 43, 0, 8)),
    # OpenAI-compatible servers without raw usage: llama-index-llms-openai's additional_kwargs counts.
    (reply(SimpleNamespace(usage=None),
           extra={"prompt_tokens": 101, "completion_tokens": 23, "total_tokens": 124}), (101, 23, 0, 0, 0)),
    # Gemini-style usage_metadata (thoughts are billed output).
    (reply({"usage_metadata": {"prompt_token_count": 12, "candidates_token_count": 5,
                               "thoughts_token_count": 2, "cached_content_token_count": 4}}),
     (12, 7, 4, 0, 2)),
])
def test_usage_is_read_from_every_shape(response: ChatResponse, expected: tuple[int, ...]) -> None:
    record = recorded(response)
    assert usage(record) == expected
    assert record.usage_source == "provider"


def test_the_served_model_is_the_one_priced() -> None:
    assert recorded(reply(ANTHROPIC_RAW), "claude-haiku-4-5-latest").model == "claude-haiku-4-5"
    served = SimpleNamespace(response=SimpleNamespace(model="gpt-4o-mini-2024-07-18", usage=None))
    assert payloads.served_model(reply(served)) == "gpt-4o-mini-2024-07-18"


def test_no_usage_anywhere_is_estimated_from_the_text_tool_calls_included() -> None:
    function = {"name": "lookup", "arguments": '{"city":"Paris"}'}
    tool_call = {"id": "1", "type": "function", "function": function}
    response = reply(None, message_extra={"tool_calls": [tool_call]})
    assert payloads.usage_of(response) is None
    assert payloads.response_text(response)() == 'Paris' + 'lookup{"city":"Paris"}'
    record = recorded(response, MODEL)
    assert record.usage_source == "estimated" and record.output_tokens > 0
    assert payloads.response_text(CompletionResponse(text="plain"))() == "plain"


def test_names_and_providers() -> None:
    assert payloads.span_name("RetrieverQueryEngine.query-0b8a5c1e-7a0c-4a8e-9d55-5e6f3f0a1b2c") == (
        "RetrieverQueryEngine.query")
    assert payloads.span_method("OpenAI.astream_chat-0b8a5c1e-7a0c-4a8e-9d55-5e6f3f0a1b2c") == "astream_chat"
    assert payloads.is_stream_method("OpenAI.stream_complete-0b8a5c1e-7a0c-4a8e-9d55-5e6f3f0a1b2c")
    assert payloads.span_name("not-a-span") == "not-a-span"
    for class_name, provider in [("openai_llm", "openai"), ("azure_openai_llm", "azure"),
                                 ("Anthropic_LLM", "anthropic"), ("Gemini_LLM", "google"), ("MockLLM", None)]:
        assert payloads.provider_of({"class_name": class_name}) == provider
    assert payloads.model_of({"model_name": "unknown"}) is None  # LlamaIndex's placeholder


def test_openai_responses_llm_is_exact(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    fp.cached_tokens, fp.reasoning_tokens = 4, 2
    llm = OpenAIResponses(model=MODEL, api_base=fp.openai_base_url, api_key="test", max_retries=0)
    question = [ChatMessage(role="user", content="Capital of France?")]
    llm.chat(question)
    for _ in llm.stream_chat(question):
        pass
    records = tokenspy.calls()
    assert [r.streamed for r in records] == [False, True]
    for record, sent in zip(records, logged(fp, "/v1/responses"), strict=True):
        assert usage(record) == (sent["input_tokens"], sent["output_tokens"], 4, 0, 2)
        as_chat = {"prompt_tokens": sent["input_tokens"], "completion_tokens": sent["output_tokens"],
                   "prompt_tokens_details": {"cached_tokens": 4},
                   "completion_tokens_details": {"reasoning_tokens": 2}}
        assert_matches(record, as_chat)


def test_a_message_of_several_text_blocks_counts_them_as_sent() -> None:
    # llama-index-llms-openai sends the text blocks one after the other; `content` joins them with
    # line breaks that are never sent.
    from llama_index.core.base.llms.types import TextBlock

    message = ChatMessage(role="user", blocks=[TextBlock(text="Context: Paris is in France."),
                                               TextBlock(text="Question: where is Paris?")])
    assert payloads.prompt_of_messages([message]) == [
        {"role": "user", "content": "Context: Paris is in France.Question: where is Paris?"}]


def test_llamaindex_messages_given_to_start_call_count_their_roles_as_sent() -> None:
    from llama_index.core.base.llms.types import MessageRole

    from tokenspy_core.tokenizer import count_message_tokens

    messages = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), ChatMessage(role="user", content="Hi")]
    sent = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert count_message_tokens(messages, "gpt-4o") == count_message_tokens(sent, "gpt-4o")
