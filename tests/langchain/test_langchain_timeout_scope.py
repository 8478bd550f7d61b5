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


def test_a_router_model_cancelled_around_its_inner_model_releases_both_runs() -> None:
    # The inner model's run is merged into the router's call: the cancellation ends both.
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    handler = TokenSpyHandler()

    class _Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(1.0)
            return await _Answer().handle_async_request(request)

    async def main() -> None:
        inner = ChatOpenAI(model="gpt-4o", base_url="http://provider.test/v1", api_key="k", max_retries=0,  # type: ignore[arg-type]
                           http_async_client=httpx.AsyncClient(transport=_Slow()))

        class Router(BaseChatModel):
            @property
            def _llm_type(self) -> str:
                return "router"

            def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                          **kwargs: Any) -> ChatResult:
                raise NotImplementedError

            async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                                 **kwargs: Any) -> ChatResult:
                answer = await inner.ainvoke(messages)
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer.content))])

        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await Router().ainvoke(PROMPT)
        assert handler.open_runs == 0

    tokenspy.set_handler(handler)  # the inner model sees it too
    try:
        asyncio.run(main())
    finally:
        tokenspy.set_handler(None)
    assert [(r.status, r.partial) for r in tokenspy.calls()] == [("aborted", True)] * 3
