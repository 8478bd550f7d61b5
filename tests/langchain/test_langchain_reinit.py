"""A handler made while SDK interception was off, and a completion LLM's operation."""

from __future__ import annotations

from langchain_openai import ChatOpenAI, OpenAI
from lc_helpers import KEY, from_log

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


def test_a_handler_made_under_auto_instrument_false_gets_the_sdk_layer_once_it_is_back_on(
        fp: FakeProvider) -> None:
    tokenspy.init(auto_instrument=False)
    handler = TokenSpyHandler()
    tokenspy.init(auto_instrument=True)
    model = ChatOpenAI(model="gpt-4o", base_url=fp.openai_base_url, api_key=KEY, max_retries=0)
    for _ in model.stream("Say hello", config={"callbacks": [handler]}):
        pass
    (entry,) = fp.requests
    assert entry["stream_options"] == {"include_usage": True}  # asked by the SDK layer
    (record,) = handler.calls()
    assert record.usage_source == "provider"
    assert from_log(entry).matches(record)


def test_a_completion_llm_run_is_a_text_completion(fp: FakeProvider) -> None:
    handler = TokenSpyHandler()
    llm = OpenAI(model="gpt-3.5-turbo-instruct", base_url=fp.openai_base_url, api_key=KEY, max_retries=0)
    llm.invoke("Say hello", config={"callbacks": [handler]})
    (record,) = handler.calls()
    assert record.operation == "text_completion"
    assert (record.input_tokens, record.output_tokens) == (fp.requests[0]["usage"]["prompt_tokens"],
                                                           fp.requests[0]["usage"]["completion_tokens"])
