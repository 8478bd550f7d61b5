"""Servers that put the running usage on every chunk (vLLM's continuous usage stats, Z.ai's GLM): the
answer is whole with its last chunk, not with the first that carries usage. Left early, the record is
cut (partial), at the provider's counts of what was sent so far."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

import tokenspy

WORDS = ["Hel", "lo", " wor", "ld", "!"]


def _chunk(i: int, word: str) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "glm-4.5",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": "stop" if i == 4 else None}],
            "usage": {"prompt_tokens": 50, "completion_tokens": (i + 1) * 10, "total_tokens": 50 + (i + 1) * 10}}
    return f"data: {json.dumps(body)}\n\n".encode()


def _client() -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        events = [_chunk(i, word) for i, word in enumerate(WORDS)] + [b"data: [DONE]\n\n"]
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(events))

    return tokenspy.observe(openai.OpenAI(api_key="k", base_url="http://vllm.test/v1", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(answer))))


@pytest.mark.parametrize("read", [2, len(WORDS)], ids=["left early", "read to the end"])
def test_a_running_usage_on_every_chunk_ends_the_answer_only_with_its_last(read: int) -> None:
    tokenspy.set_price("glm-4.5", input=1, output=2)
    seen: list[Any] = []
    for chunk in _client().chat.completions.create(model="glm-4.5", messages=[{"role": "user", "content": "hi"}],
                                                   stream=True):
        seen.append(chunk)
        if len(seen) == read:
            break
    (record,) = tokenspy.calls()
    whole = read == len(WORDS)
    assert (record.status, record.partial) == (("finished", False) if whole else ("aborted", True))
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (50, read * 10, "provider")


def test_langchain_over_the_sdk_layer_keeps_the_providers_running_totals_unsummed() -> None:
    # LangChain adds up each chunk's usage_metadata: over running totals that is 250 in / 150 out. The
    # SDK layer under it read the provider's own last totals, which stay the record's.
    from langchain_openai import ChatOpenAI

    from tokenspy.langchain import TokenSpyHandler

    tokenspy.set_price("glm-4.5", input=1, output=2)
    client = _client()
    llm = ChatOpenAI(model="glm-4.5", api_key="k", base_url="http://vllm.test/v1", max_retries=0,  # type: ignore[arg-type]
                     http_client=client._client, stream_usage=True)
    handler = TokenSpyHandler()
    text = "".join(str(chunk.content) for chunk in llm.stream("hi", config={"callbacks": [handler]}))
    assert text == "".join(WORDS)
    (record,) = tokenspy.calls()
    assert (record.input_tokens, record.output_tokens, record.usage_source, record.status) == (
        50, 50, "provider", "finished")
