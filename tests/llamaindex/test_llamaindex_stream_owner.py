"""A streamed answer belongs to the handler of the component that produced the stream.

With `streaming=True` a query engine's synthesizer hands back a generator that calls the LLM only
when `response_gen` is read, after the query returned: LlamaIndex gives that call no parent span.
The query engine's own `callback_manager=CallbackManager([handler])` must still own it, as it owns
the non-streamed answer, not `set_handler`'s handler, nor nobody at all.
"""

from __future__ import annotations

from typing import Any

import pytest
from li_helpers import EMBED_MODEL, MODEL, assert_matches, logged, openai_embedding, openai_llm
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import CondenseQuestionChatEngine, ContextChatEngine
from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.query_engine import RetrieverQueryEngine

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import Tracker

DOCS = [Document(text="Paris is the capital of France."), Document(text="Berlin is the capital of Germany.")]
QUERY = ("RetrieverQueryEngine.query",)
RETRIEVE = (*QUERY, "VectorIndexRetriever.retrieve")
SYNTHESIZE = (*QUERY, "CompactAndRefine.synthesize")
QUESTION = "What is the capital of France?"


def _engine(index: VectorStoreIndex, llm: Any, handler: TokenSpyHandler) -> RetrieverQueryEngine:
    return RetrieverQueryEngine.from_args(index.as_retriever(), llm=llm, streaming=True,
                                          callback_manager=CallbackManager([handler]))


@pytest.mark.parametrize("process_wide", [False, True], ids=["alone", "with set_handler"])
def test_a_streamed_answer_belongs_to_the_query_engines_own_handler(fp: FakeProvider, process_wide: bool) -> None:
    other = TokenSpyHandler()
    if process_wide:
        tokenspy.set_handler(other)
    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    mine = Tracker()
    engine = _engine(index, openai_llm(fp), TokenSpyHandler(tracker=mine))
    response = engine.query(QUESTION)
    assert isinstance(response, StreamingResponse)
    assert "".join(response.response_gen) == fp.reply  # the LLM call starts here, after the query returned
    embedding, answer = mine.calls()
    assert (embedding.span_path, answer.span_path) == (RETRIEVE, SYNTHESIZE)
    assert (answer.model, answer.streamed, answer.usage_source) == (MODEL, True, "provider")
    assert_matches(answer, logged(fp)[0])
    assert_matches(embedding, logged(fp, "/v1/embeddings")[1], EMBED_MODEL)
    # Only the index build, outside the query engine, is set_handler's; the default tracker has none of it.
    assert [r.span_path for r in other.calls()] == ([()] if process_wide else [])
    assert [r.operation for r in tokenspy.calls()] == (["embeddings"] if process_wide else [])


@pytest.mark.parametrize("process_wide", [False, True], ids=["alone", "with set_handler"])
async def test_an_async_streamed_answer_belongs_to_the_query_engines_own_handler(fp: FakeProvider,
                                                                                 process_wide: bool) -> None:
    if process_wide:
        tokenspy.set_handler(TokenSpyHandler())
    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    mine = Tracker()
    response = await _engine(index, openai_llm(fp), TokenSpyHandler(tracker=mine)).aquery(QUESTION)
    assert isinstance(response, AsyncStreamingResponse)
    assert "".join([t async for t in response.async_response_gen()]) == fp.reply
    embedding, answer = mine.calls()
    assert (embedding.span_path, answer.span_path) == (RETRIEVE, SYNTHESIZE)
    assert_matches(answer, logged(fp)[0])


def test_a_streamed_answer_no_other_layer_sees_is_still_recorded() -> None:
    # MockLLM: no SDK layer below, no set_handler: the owner is the only way the call is recorded.
    index = VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))
    handler = TokenSpyHandler()
    response = _engine(index, MockLLM(max_tokens=5), handler).query(QUESTION)
    assert "".join(response.response_gen) == "text text text text text"  # type: ignore[union-attr]
    embedding, answer = handler.calls()
    assert (answer.span_path, answer.operation, answer.output_tokens, answer.status) == (
        SYNTHESIZE, "text_completion", 5, "finished")
    assert embedding.span_path == RETRIEVE


def test_a_query_engines_stream_read_by_a_chat_engine_belongs_to_the_query_engines_handler() -> None:
    # The chat engine reads the query engine's stream in its worker thread, inside its own span: the
    # component that produced the stream (the query engine) is the nearer one, so its handler owns it.
    index = VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))
    llm = MockLLM(max_tokens=5)
    of_query, of_chat = TokenSpyHandler(), TokenSpyHandler()
    chat = CondenseQuestionChatEngine(query_engine=_engine(index, llm, of_query), llm=llm,
                                      condense_question_prompt=DEFAULT_PROMPT,
                                      memory=ChatMemoryBuffer.from_defaults(llm=llm),
                                      callback_manager=CallbackManager([of_chat]))
    response = chat.stream_chat(QUESTION)
    assert "".join(response.response_gen) == "text text text text text"
    paths = [r.span_path for r in of_query.calls()]
    assert paths == [("CondenseQuestionChatEngine.chat", *RETRIEVE), ("CondenseQuestionChatEngine.chat", *SYNTHESIZE)]
    assert of_query.calls()[1].output_tokens == 5
    assert of_chat.calls() == []


def test_a_chat_engine_given_a_handler_after_from_defaults_owns_its_streamed_turn() -> None:
    # `from_defaults` ignores `callback_manager=` (LlamaIndex passes `Settings`'): the documented way.
    index = VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))
    handler = TokenSpyHandler()
    engine = ContextChatEngine.from_defaults(index.as_retriever(), llm=MockLLM(max_tokens=5),
                                             callback_manager=CallbackManager([handler]))
    assert handler not in engine.callback_manager.handlers
    engine.callback_manager = CallbackManager([handler])
    response = engine.stream_chat(QUESTION)
    assert "".join(response.response_gen) == "text text text text text"
    embedding, answer = handler.calls()
    chat = "ContextChatEngine.chat"
    assert (embedding.span_path, answer.span_path) == (
        (chat, "VectorIndexRetriever.retrieve"), (chat, "CompactAndRefine.synthesize"))
    assert (answer.output_tokens, answer.status) == (5, "finished")
