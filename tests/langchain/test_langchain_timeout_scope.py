"""`asyncio.timeout()` around a chat model's `ainvoke`, in a task that lives on: the cancellation raises
out of langchain-core's `agenerate` past every callback, whenever it comes (before the request, after
the whole answer was read). The call is recorded once, its run released, and the task's next call is a
call of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy_core.tokenizer import count_message_tokens

PROMPT = "hello there"
USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}


class _Answer(httpx.AsyncBaseTransport):
    """Answers at once; with `deadline` set, moves that timeout to now once the answer is read."""

    deadline: asyncio.Timeout | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time())
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": USAGE})


@pytest.mark.parametrize("when", ["before the request", "after the answer"])
def test_a_timeout_scope_around_ainvoke_records_the_call_and_frees_the_task(when: str) -> None:
    handler = TokenSpyHandler()
    transport = _Answer()

    async def worker() -> None:
        llm = ChatOpenAI(model="gpt-4o", base_url="http://provider.test/v1", api_key="k", max_retries=0,  # type: ignore[arg-type]
                         http_async_client=httpx.AsyncClient(transport=transport))
        config: Any = {"callbacks": [handler]}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0 if when == "before the request" else 10) as deadline:
                transport.deadline = None if when == "before the request" else deadline
                await llm.ainvoke(PROMPT, config=config)
        transport.deadline = None
        assert handler.open_runs == 0
        await llm.ainvoke(PROMPT, config=config)  # the same task's next call: one of its own

    asyncio.run(worker())
    cut, second = tokenspy.calls()
    prompt = count_message_tokens([{"role": "user", "content": PROMPT}], "gpt-4o")
    assert (cut.status, cut.partial) == ("aborted", True)
    if when == "after the answer":  # billed whole: the provider's numbers
        assert (cut.input_tokens, cut.output_tokens, cut.usage_source) == (9, 7, "provider")
    else:
        assert (cut.input_tokens, cut.output_tokens, cut.usage_source) == (prompt, 0, "estimated")
    assert (second.status, second.input_tokens, second.output_tokens) == ("finished", 9, 7)
    assert handler.open_runs == 0
