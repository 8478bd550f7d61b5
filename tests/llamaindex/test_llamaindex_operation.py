"""A record's `operation` names the endpoint the provider served, as the SDK layer names it.

llama-index-llms-openai sends a completion call of a completion model (`gpt-3.5-turbo-instruct`) to
`/completions` ("text_completion") and one of a chat model to `/chat/completions` ("chat"), by the
LLM's `metadata.is_chat_model`. A wrapper's record is its model call's.
"""

from __future__ import annotations

from typing import Any

import pytest
from li_helpers import PRICES, assert_matches, logged, openai_llm
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.openai import OpenAI
from test_llamaindex_wrapper_calls import PROMPT, Passthrough

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

INSTRUCT = "gpt-3.5-turbo-instruct"


@pytest.fixture(autouse=True)
def _instruct_price() -> None:
    tokenspy.set_price(INSTRUCT, input=PRICES["gpt-4o-mini"][0], output=PRICES["gpt-4o-mini"][1])


def instruct_llm(fp: FakeProvider, **kwargs: Any) -> OpenAI:
    # max_tokens given: LlamaIndex otherwise computes it with a tiktoken download.
    return OpenAI(model=INSTRUCT, max_tokens=20, api_base=fp.openai_base_url, api_key="test", max_retries=0,
                  **kwargs)


@pytest.mark.parametrize("layers", ["llamaindex", "llamaindex + sdk"])
def test_a_completion_model_call_is_a_text_completion(fp: FakeProvider, global_handler: TokenSpyHandler,
                                                      layers: str) -> None:
    if layers == "llamaindex + sdk":
        tokenspy.init(auto_instrument=True)
    with tokenspy.session("complete"):
        instruct_llm(fp).complete(PROMPT)
    [sent] = logged(fp, "/v1/completions")
    [record] = tokenspy.calls()
    assert (record.operation, record.model, record.usage_source) == ("text_completion", INSTRUCT, "provider")
    assert (record.input_tokens, record.output_tokens) == (sent["prompt_tokens"], sent["completion_tokens"])


def test_a_completion_model_stream_is_estimated_from_the_bare_prompt(fp: FakeProvider,
                                                                     global_handler: TokenSpyHandler) -> None:
    list(instruct_llm(fp).stream_complete(PROMPT))  # /completions sends no stream usage
    [record] = tokenspy.calls()
    assert (record.operation, record.usage_source) == ("text_completion", "estimated")
    assert record.input_tokens == count_tokens(PROMPT, INSTRUCT)  # no chat framing: none is sent


def test_a_chat_models_completion_call_is_a_chat(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)
    llm.complete(PROMPT)
    llm.chat([ChatMessage(role="user", content=PROMPT)])
    assert [r.operation for r in tokenspy.calls()] == ["chat", "chat"]
    assert not logged(fp, "/v1/completions")


@pytest.mark.parametrize(("inner", "operation", "path"), [
    ("chat model", "chat", "/v1/chat/completions"), ("completion model", "text_completion", "/v1/completions")])
def test_a_wrappers_record_has_its_model_calls_operation(fp: FakeProvider, global_handler: TokenSpyHandler,
                                                         inner: str, operation: str, path: str) -> None:
    # The wrapper's own metadata says a completion model (LlamaIndex's default): its model call decides.
    llm = openai_llm(fp) if inner == "chat model" else instruct_llm(fp)
    Passthrough(primary=llm).complete(PROMPT)
    [sent] = logged(fp, path)
    [record] = tokenspy.calls()
    assert record.operation == operation
    if inner == "chat model":
        assert_matches(record, sent)


@pytest.mark.parametrize("layers", ["llamaindex", "llamaindex + sdk"])
@pytest.mark.parametrize("method", ["chat", "stream_chat", "achat", "astream_chat"])
async def test_a_completion_models_chat_is_a_text_completion(fp: FakeProvider, global_handler: TokenSpyHandler,
                                                             method: str, layers: str) -> None:
    # llama-index-llms-openai sends a completion model's chat to `/completions`, as the prompt its
    # messages make: the record names that endpoint, as the SDK layer names the request.
    if layers == "llamaindex + sdk":
        tokenspy.init(auto_instrument=True)
    llm, messages = instruct_llm(fp), [ChatMessage(role="user", content=PROMPT)]
    if method == "chat":
        llm.chat(messages)
    elif method == "stream_chat":
        list(llm.stream_chat(messages))
    elif method == "achat":
        await llm.achat(messages)
    else:
        [chunk async for chunk in await llm.astream_chat(messages)]
    [sent] = logged(fp, "/v1/completions")
    assert not logged(fp)
    [record] = tokenspy.calls()
    assert (record.operation, record.model) == ("text_completion", INSTRUCT)
    if not method.endswith("stream_chat") or layers == "llamaindex + sdk":  # /completions streams no usage
        assert record.usage_source == "provider"
        assert (record.input_tokens, record.output_tokens) == (sent["prompt_tokens"], sent["completion_tokens"])
