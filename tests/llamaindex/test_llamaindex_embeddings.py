"""Embedding calls: input tokens counted and priced, one record per provider request."""

from __future__ import annotations

from li_helpers import EMBED_MODEL, assert_matches, expected_cost, logged, openai_embedding
from llama_index.core.embeddings import MockEmbedding

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

TEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "Rome is in Italy."]


def test_sync_embeddings_are_counted_and_priced(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    embed = openai_embedding(fp, embed_batch_size=2)
    embed.get_query_embedding("capital of France")
    embed.get_text_embedding_batch(TEXTS)  # two requests: 2 texts, then 1
    records = tokenspy.calls()
    usages = logged(fp, "/v1/embeddings")
    assert len(records) == len(usages) == 3
    for record, usage in zip(records, usages, strict=True):
        assert_matches(record, usage, EMBED_MODEL)
        # LlamaIndex drops the provider's usage: the texts are counted (exactly, for OpenAI models).
        assert (record.operation, record.provider) == ("embeddings", "openai")
        assert record.usage_source == "estimated"
    assert records[2].input_tokens == count_tokens(TEXTS[2], EMBED_MODEL)


async def test_async_batches_sent_together_are_one_record(fp: FakeProvider,
                                                          global_handler: TokenSpyHandler) -> None:
    embed = openai_embedding(fp, embed_batch_size=1)
    await embed.aget_query_embedding("capital of France")
    await embed.aget_text_embedding_batch(TEXTS)  # three concurrent requests
    query, batch = tokenspy.calls()
    usages = logged(fp, "/v1/embeddings")
    assert_matches(query, usages[0], EMBED_MODEL)
    total = sum(u["prompt_tokens"] for u in usages[1:])
    assert batch.input_tokens == total == sum(count_tokens(t, EMBED_MODEL) for t in TEXTS)
    assert batch.cost_femto == expected_cost(EMBED_MODEL, total, 0)


def test_unknown_embedding_model_is_recorded_unpriced(global_handler: TokenSpyHandler) -> None:
    MockEmbedding(embed_dim=4).get_text_embedding("hello world")
    [record] = tokenspy.calls()
    assert (record.model, record.input_tokens, record.cost_femto) == (None, count_tokens("hello world"), None)
