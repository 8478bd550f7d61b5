"""LlamaIndex's own retries (llama-index-llms-openai retries a failed request with tenacity, inside one
LLM call): the call is recorded once, with the usage of the request that was answered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from li_helpers import MODEL, assert_matches, logged
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.openai import OpenAI

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def _first_request_fails(flag: str) -> dict[str, list[Any]]:
    sent: list[int] = []

    def hook(request: httpx.Request) -> None:
        sent.append(1)
        if len(sent) == 1:
            request.headers["x-fake-flags"] = flag  # the fake answers this one request with an error

    return {"request": [hook]}


@pytest.mark.usefixtures("sdk_layer")
def test_a_retried_request_under_a_session_is_one_record(global_handler: TokenSpyHandler,
                                                         fp: FakeProvider) -> None:
    # The failed first request must not keep the LlamaIndex call to itself: the retry merges into it.
    llm = OpenAI(model=MODEL, api_base=fp.openai_base_url, api_key="test", max_retries=2,
                 http_client=httpx.Client(event_hooks=_first_request_fails("http429")))
    with tokenspy.session("retried") as s:
        llm.chat(QUESTION)
    (answered,) = [u for u in logged(fp) if u]
    assert len(fp.requests) == 2
    (record,) = tokenspy.calls()
    assert record.status == "finished" and record.usage_source == "provider"
    assert_matches(record, answered)
    assert s.calls == 1


@pytest.mark.usefixtures("sdk_layer")
async def test_a_retried_async_request_under_a_profile_is_one_record(global_handler: TokenSpyHandler,
                                                                     fp: FakeProvider) -> None:
    llm = OpenAI(model=MODEL, api_base=fp.openai_base_url, api_key="test", max_retries=2,
                 async_http_client=httpx.AsyncClient(event_hooks=_async(_first_request_fails("http500"))))

    @tokenspy.profile
    async def ask() -> None:
        await llm.achat(QUESTION)

    await ask()
    (answered,) = [u for u in logged(fp) if u]
    (record,) = tokenspy.calls()
    assert record.status == "finished" and record.span_path == ("ask",)
    assert_matches(record, answered)


def _async(hooks: dict[str, list[Any]]) -> dict[str, list[Any]]:
    (hook,) = hooks["request"]

    async def ahook(request: httpx.Request) -> None:
        hook(request)

    return {"request": [ahook]}
