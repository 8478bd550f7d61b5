"""Reasoning a model streams as text is output: a Responses API reasoning summary in every output format
of langchain-openai (its default "responses/v1" keeps it in a content block's `summary`, "v0" in
`additional_kwargs["reasoning"]`), and `additional_kwargs["reasoning_content"]` (DeepSeek-style
integrations). A stream cut short before its usage counts what arrived of it; an answer without usage
counts all of it. The Responses API is an `httpx.MockTransport` replaying its events: the fake provider
sends no reasoning summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from lc_helpers import KEY

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy_core.tokenizer import count_tokens

MODEL = "o4-mini"
SUMMARY = ["Considering", " the", " capital", ".", " The", " user", " asks", " about", " France", "."]
ANSWER = "Paris is the capital."


def _event(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': 0, **fields})}\n\n"


def _response(status: str, output: list[Any]) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 0, "model": MODEL, "status": status,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None}


REASONING = {"type": "reasoning", "id": "rs_1", "summary": []}
MESSAGE = {"type": "message", "id": "m1", "role": "assistant", "status": "in_progress", "content": []}
DONE = [{**REASONING, "summary": [{"type": "summary_text", "text": "".join(SUMMARY)}]},
        {**MESSAGE, "status": "completed", "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}]


def _events() -> str:
    """A reasoning summary, then the answer, and a completed response that carries no usage (a proxy's)."""
    reasoning, message, (done_reasoning, done_message) = REASONING, MESSAGE, DONE
    where = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    return "".join([
        _event("response.created", response=_response("in_progress", [])),
        _event("response.output_item.added", output_index=0, item=reasoning),
        _event("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""}),
        *(_event("response.reasoning_summary_text.delta", **where, delta=word) for word in SUMMARY),
        _event("response.output_item.done", output_index=0, item=done_reasoning),
        _event("response.output_item.added", output_index=1, item=message),
        _event("response.output_text.delta", item_id="m1", output_index=1, content_index=0, delta=ANSWER,
               logprobs=[]),
        _event("response.output_item.done", output_index=1, item=done_message),
        _event("response.completed", response=_response("completed", [done_reasoning, done_message])),
    ])


def _responses_model(output_version: str | None, streaming: bool = False) -> ChatOpenAI:
    def reply(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_events().encode())
        return httpx.Response(200, json=_response("completed", DONE))

    options: dict[str, Any] = {} if output_version is None else {"output_version": output_version}
    if streaming:  # set at all (even False), `streaming` decides whether stream() streams
        options["streaming"] = True
    return ChatOpenAI(model=MODEL, base_url="http://provider/v1", api_key=KEY, max_retries=0, use_responses_api=True,
                      reasoning={"effort": "low", "summary": "auto"}, **options,
                      http_client=httpx.Client(transport=httpx.MockTransport(reply)))


def _summary_read(chunk: AIMessageChunk) -> str:
    """The reasoning summary text a chunk carries, in any output format."""
    blocks = [block for block in chunk.content if isinstance(block, dict) and block.get("type") == "reasoning"]
    blocks += [chunk.additional_kwargs["reasoning"]] if "reasoning" in chunk.additional_kwargs else []
    return "".join(block.get("reasoning", "") + "".join(part.get("text", "") for part in block.get("summary", ()))
                   for block in blocks)


VERSIONS = [None, "responses/v1", "v1", "v0"]  # None: langchain-openai's default ("responses/v1")


@pytest.mark.parametrize("output_version", VERSIONS, ids=[str(v) for v in VERSIONS])
def test_a_responses_stream_stopped_in_its_reasoning_summary_counts_it(
        layers: str, handler: TokenSpyHandler, output_version: str | None) -> None:
    stream = _responses_model(output_version).stream("Capital of France?", config={"callbacks": [handler]})
    assert isinstance(stream, Iterator)
    read = ""
    for chunk in stream:
        read += _summary_read(chunk)
        if read == "".join(SUMMARY[:5]):
            break
    stream.close()  # type: ignore[attr-defined]
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert record.output_tokens == count_tokens("".join(SUMMARY[:5]), MODEL) == 5
    assert record.ttft_s is not None
    assert handler.open_runs == 0


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("output_version", VERSIONS, ids=[str(v) for v in VERSIONS])
def test_a_responses_answer_without_usage_counts_its_reasoning_summary(
        layers: str, handler: TokenSpyHandler, output_version: str | None, streaming: bool) -> None:
    message = _responses_model(output_version, streaming).invoke("Capital of France?", config={"callbacks": [handler]})
    assert message.text == ANSWER
    (record,) = tokenspy.calls()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    # The summary ends a sentence, the answer starts one: whichever comes first, no token spans both.
    assert record.output_tokens == count_tokens("".join(SUMMARY), MODEL) + count_tokens(ANSWER, MODEL) == 15


class ReasoningContentChat(BaseChatModel):
    """Streams its reasoning in `additional_kwargs["reasoning_content"]`, then the answer: the shape of
    langchain-deepseek, ChatGroq and ChatOllama. No usage."""

    @property
    def _llm_type(self) -> str:
        return "reasoning-content"

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for word in SUMMARY:
            message = AIMessageChunk(content="", additional_kwargs={"reasoning_content": word})
            chunk = ChatGenerationChunk(message=message)
            if run_manager:
                run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=ANSWER))
        if run_manager:
            run_manager.on_llm_new_token(ANSWER, chunk=chunk)
        yield chunk

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        message = AIMessage(content=ANSWER, additional_kwargs={"reasoning_content": "".join(SUMMARY)})
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.mark.parametrize("output_version", [None, "v1"], ids=["v0", "v1"])
def test_reasoning_content_streamed_beside_the_answer_is_output(handler: TokenSpyHandler,
                                                                output_version: str | None) -> None:
    # output_version "v1" also copies it into a reasoning block of the content: counted once.
    model = ReasoningContentChat(output_version=output_version)
    stream = model.stream("Capital of France?", config={"callbacks": [handler]})
    assert isinstance(stream, Iterator)
    for seen, _ in enumerate(stream, start=1):
        if seen == 5:
            break
    stream.close()  # type: ignore[attr-defined]
    (record,) = tokenspy.calls()
    assert (record.status, record.usage_source) == ("aborted", "estimated")
    assert record.output_tokens == count_tokens("".join(SUMMARY[:5]), "") == 5
    assert record.ttft_s is not None
    tokenspy.reset()

    model.invoke("Capital of France?", config={"callbacks": [handler]})
    (record,) = tokenspy.calls()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert record.output_tokens == count_tokens("".join(SUMMARY), "") + count_tokens(ANSWER, "") == 15
