"""A chat model called directly (`ainvoke`, `abatch`) whose request is cancelled in flight: LangChain's
`agenerate` reports no error for it (its `gather` raises past the callbacks), and the call is still
recorded, aborted with its prompt estimated, once; the handler keeps nothing of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy_core.tokenizer import count_message_tokens

PROMPT = "hello world"
ANSWER = {"id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}


class _Slow(httpx.AsyncBaseTransport):
    """Answers after a second: every request here is cancelled first."""

    def __init__(self) -> None:
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        await asyncio.sleep(1.0)
        return httpx.Response(200, json=ANSWER)


async def _wait_for(call: Awaitable[Any]) -> None:
    await asyncio.wait_for(call, 0.05)


async def _timeout(call: Awaitable[Any]) -> None:
    async with asyncio.timeout(0.05):  # the task lives on after it
        await call


async def _cancel(call: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0.05)
    task.cancel()
    await task


CUTS: dict[str, Callable[[Awaitable[Any]], Awaitable[None]]] = {
    "wait_for": _wait_for, "timeout": _timeout, "cancel": _cancel}


@pytest.mark.parametrize("batch", [False, True], ids=["ainvoke", "abatch"])
@pytest.mark.parametrize("cut", list(CUTS))
def test_a_cancelled_model_request_is_recorded_aborted_and_released(cut: str, batch: bool) -> None:
    handler = TokenSpyHandler()
    transport = _Slow()

    async def main() -> None:
        llm = ChatOpenAI(model="gpt-4o", base_url="http://provider.test/v1", api_key="k", max_retries=0,
                         http_async_client=httpx.AsyncClient(transport=transport))
        config: Any = {"callbacks": [handler]}
        for _ in range(3):
            call = llm.abatch([PROMPT, PROMPT], config=config) if batch else llm.ainvoke(PROMPT, config=config)
            with pytest.raises((TimeoutError, asyncio.CancelledError)):
                await CUTS[cut](call)

    asyncio.run(main())
    records = tokenspy.calls()
    assert len(records) == transport.sent == (6 if batch else 3)
    prompt = count_message_tokens([{"role": "user", "content": PROMPT}], "gpt-4o")
    assert {(r.status, r.partial, r.input_tokens, r.output_tokens, r.usage_source) for r in records} == {
        ("aborted", True, prompt, 0, "estimated")}
    assert handler.open_runs == 0  # each released by its task's end at the latest
