"""A model request in flight when its chain is cancelled: recorded aborted, nothing left open."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from lc_helpers import KEY

import tokenspy
from tokenspy.langchain import TokenSpyHandler


async def _slow(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(5)
    return httpx.Response(500)


async def test_a_chain_cancelled_while_its_model_waits_leaves_no_run_open(handler: TokenSpyHandler) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_slow)) as client:
        model = ChatOpenAI(model="gpt-4o", api_key=KEY, base_url="http://fake.invalid/v1", max_retries=0,
                           http_async_client=client)
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
        for _ in range(3):
            async with tokenspy.session("s") as s:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(chain.ainvoke({"q": "capital of France?"},
                                                         config={"callbacks": [handler]}), 0.05)
            assert handler.open_runs == 0
            (record,) = s.records()
            assert (record.status, record.partial, record.output_tokens) == ("aborted", True, 0)
    assert len(handler.calls()) == 3
