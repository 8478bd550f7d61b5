"""Prompts sent as token ids (legacy Completions' `prompt`, Embeddings' `input`, as LangChain's
`OpenAIEmbeddings` sends them): estimated, when the provider reports no usage, as the ids sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

INSTRUCT = "gpt-3.5-turbo-instruct"
IDS = list(range(1000, 1100))  # 100 token ids
NO_USAGE: dict[str, Any] = {"stream_options": {"include_usage": False}}


@pytest.mark.parametrize(("prompt", "expected"), [(IDS, 100), ([IDS, IDS[:50]], 150)], ids=["ids", "lists-of-ids"])
def test_completions_stream_of_token_ids_estimates_the_ids_sent(
    oai: openai.OpenAI, fp: FakeProvider, prompt: Any, expected: int
) -> None:
    tokenspy.observe(oai)
    for _ in oai.completions.create(model=INSTRUCT, prompt=prompt, stream=True, **NO_USAGE):
        pass
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert (record.input_tokens, record.output_tokens) == (expected, count_tokens(fp.reply, INSTRUCT))


def test_embeddings_of_token_ids_without_usage_estimate_the_ids_sent() -> None:
    def no_usage(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["input"]
        data = [{"object": "embedding", "index": i, "embedding": [0.0, 1.0]} for i in range(len(inputs))]
        return httpx.Response(200, json={"object": "list", "data": data, "model": "text-embedding-3-small"})

    client = tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                            http_client=httpx.Client(transport=httpx.MockTransport(no_usage))))
    client.embeddings.create(model="text-embedding-3-small", input=[IDS, IDS], encoding_format="float")
    record = only_record()
    assert (record.operation, record.usage_source, record.input_tokens, record.output_tokens) == (
        "embeddings", "estimated", 200, 0)
