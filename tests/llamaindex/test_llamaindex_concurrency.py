"""Concurrent LlamaIndex work: each session gets exactly its own calls, in tasks and in threads."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from li_helpers import MODEL, expected_cost, logged, openai_embedding, openai_llm
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

N = 50


def question(i: int) -> str:
    return "Tell me about the number " + " ".join(["seven"] * (i + 1)) + "."  # prompts of distinct sizes


async def test_concurrent_achat_sessions_get_exact_totals(fp: FakeProvider,
                                                          global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)

    async def ask(i: int) -> tokenspy.Session:
        async with tokenspy.session(f"user-{i}") as session:
            await llm.achat([ChatMessage(role="user", content=question(i))])
            stream = await llm.astream_chat([ChatMessage(role="user", content=question(i))])
            async for _ in stream:
                pass
        return session

    sessions = await asyncio.gather(*(ask(i) for i in range(N)))
    output = count_tokens(fp.reply, MODEL)
    for i, session in enumerate(sessions):
        prompt = count_message_tokens([{"role": "user", "content": question(i)}], MODEL)
        assert [(r.input_tokens, r.output_tokens, r.usage_source, r.streamed) for r in session.records()] == [
            (prompt, output, "provider", False), (prompt, output, "provider", True)]
        assert session.tracker.totals().cost == 2 * expected_cost(MODEL, prompt, output)
        assert {r.span_path for r in session.records()} == {(f"user-{i}",)}
    assert sum(s.tracker.totals().cost for s in sessions) == tokenspy.stats()["tree"]["cost_femto"]
    assert len(tokenspy.calls()) == 2 * N == len(logged(fp))


async def test_concurrent_aquery_sessions_match_the_provider(fp: FakeProvider,
                                                             global_handler: TokenSpyHandler) -> None:
    index = VectorStoreIndex.from_documents([Document(text="Paris is the capital of France.")],
                                            embed_model=openai_embedding(fp))
    engine = index.as_query_engine(llm=openai_llm(fp))
    fp.reset()

    async def ask(i: int) -> tokenspy.Session:
        async with tokenspy.session(f"user-{i}") as session:
            await engine.aquery(question(i))
        return session

    sessions = await asyncio.gather(*(ask(i) for i in range(N)))
    per_session = []
    for session in sessions:
        records = session.records()
        assert sorted(r.operation for r in records) == ["chat", "embeddings"]
        [chat] = [r for r in records if r.operation == "chat"]
        assert chat.span_path[1:] == ("RetrieverQueryEngine.query", "CompactAndRefine.synthesize")
        per_session.append((chat.input_tokens, chat.output_tokens))
    # Each session's call is one of the provider's requests: the multisets are equal.
    assert Counter(per_session) == Counter((u["prompt_tokens"], u["completion_tokens"]) for u in logged(fp))
    embedded = sorted(r.input_tokens for s in sessions for r in s.records() if r.operation == "embeddings")
    assert embedded == sorted(u["prompt_tokens"] for u in logged(fp, "/v1/embeddings"))


def test_threads_each_in_a_session(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)

    def ask(i: int) -> tuple[int, tokenspy.Session]:
        with tokenspy.session(f"thread-{i}") as session:
            for _ in llm.stream_chat([ChatMessage(role="user", content=question(i))]):
                pass
        return i, session

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, range(16)))
    for i, session in results:
        [record] = session.records()
        assert record.input_tokens == count_message_tokens([{"role": "user", "content": question(i)}], MODEL)
        assert record.usage_source == "provider"
