"""Which handler owns a call while `tokenspy.set_handler` is in force.

set_handler's forwarder sits in `Settings.callback_manager`, so every component built from `Settings`
carries it: it must stay the last resort, never a component's own handler. Otherwise an enclosing
query engine's `TokenSpyHandler` loses the calls of its LLM or embedding model, and one query's
records split between two handlers (two trackers).
"""

from __future__ import annotations

from typing import Any

import pytest
from li_helpers import EMBED_MODEL, MODEL, assert_matches, expected_cost, logged, openai_embedding, openai_llm
from llama_index.core import Document, Settings, VectorStoreIndex, get_response_synthesizer
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.llms import CustomLLM
from llama_index.core.query_engine import RetrieverQueryEngine

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.testing import FakeProvider
from tokenspy_core import BudgetExceededError, Tracker

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
QUERY = ("RetrieverQueryEngine.query",)
RETRIEVE = (*QUERY, "VectorIndexRetriever.retrieve")
SYNTHESIZE = (*QUERY, "CompactAndRefine.synthesize")


def _engine(fp: FakeProvider, llm: Any, handler: TokenSpyHandler) -> RetrieverQueryEngine:
    """A query engine given its own handler; its LLM, synthesizer, retriever and embedding model are
    built from `Settings` (the forwarder in their managers)."""
    index = VectorStoreIndex.from_documents([Document(text="Paris is the capital of France.")],
                                            embed_model=openai_embedding(fp))
    engine = RetrieverQueryEngine(index.as_retriever(), get_response_synthesizer(llm=llm),
                                  callback_manager=CallbackManager([handler]))
    [forwarder] = Settings.callback_manager.handlers
    assert llm.callback_manager.handlers == index._embed_model.callback_manager.handlers == [forwarder]
    return engine


def test_a_query_engines_own_handler_owns_its_llm_and_embedding_calls_over_set_handlers(fp: FakeProvider) -> None:
    process_wide, tracker = TokenSpyHandler(), Tracker()
    tokenspy.set_handler(process_wide)
    engine = _engine(fp, openai_llm(fp), TokenSpyHandler(tracker=tracker))
    engine.query("What is the capital of France?")
    indexing, retrieval = logged(fp, "/v1/embeddings")
    [chat_usage] = logged(fp)
    embedding, chat = tracker.calls()  # the whole query, in the query engine handler's tracker
    assert (embedding.operation, embedding.span_path, chat.span_path) == ("embeddings", RETRIEVE, SYNTHESIZE)
    assert_matches(embedding, retrieval, EMBED_MODEL)
    assert_matches(chat, chat_usage, MODEL)
    # Only the index build, outside the query engine, is set_handler's.
    [built] = process_wide.calls()
    assert (built.operation, built.span_path) == ("embeddings", ())
    assert_matches(built, indexing, EMBED_MODEL)
    assert tokenspy.calls() == [built]


@pytest.mark.parametrize("dispatcher", [True, False], ids=["dispatcher", "callbacks only"])
def test_a_handler_added_to_settings_after_set_handler_owns_the_calls(fp: FakeProvider, dispatcher: bool) -> None:
    process_wide, mine = TokenSpyHandler(), TokenSpyHandler()
    tokenspy.set_handler(process_wide)
    Settings.callback_manager.add_handler(mine)  # after set_handler's forwarder: [forwarder, mine]
    if not dispatcher:
        TAP.uninstall()  # the legacy callbacks are all there is
    llm, embed = openai_llm(fp), openai_embedding(fp)
    llm.chat(QUESTION)
    embed.get_text_embedding("Paris")
    chat, embedding = mine.calls()
    assert_matches(chat, logged(fp)[0], MODEL)
    assert_matches(embedding, logged(fp, "/v1/embeddings")[0], EMBED_MODEL)
    assert process_wide.calls() == []
    assert len(tokenspy.calls()) == 2


class CallbacksOnlyLLM(CustomLLM):
    """An LLM written against the callback manager alone (no `llm_completion_callback`): the dispatcher
    sees its spans but no LLM event, so the callback path records its calls."""

    model_name: str = MODEL

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model_name)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        payload = {EventPayload.PROMPT: prompt, EventPayload.SERIALIZED: self.to_dict()}
        with self.callback_manager.event(CBEventType.LLM, payload=payload) as event:
            response = CompletionResponse(text="Paris.", raw={"usage": {"prompt_tokens": 120, "completion_tokens": 3}})
            event.on_end(payload={EventPayload.COMPLETION: response})
        return response

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


def test_a_call_only_the_callback_path_sees_belongs_to_the_enclosing_query_engines_handler(fp: FakeProvider) -> None:
    process_wide, tracker = TokenSpyHandler(), Tracker()
    tokenspy.set_handler(process_wide)
    engine = _engine(fp, CallbacksOnlyLLM(), TokenSpyHandler(tracker=tracker))
    engine.query("What is the capital of France?")
    embedding, completion = tracker.calls()
    assert (embedding.operation, completion.span_path) == ("embeddings", SYNTHESIZE)
    assert (completion.model, completion.input_tokens, completion.output_tokens) == (MODEL, 120, 3)
    assert completion.cost_femto == expected_cost(MODEL, 120, 3)
    assert [r.span_path for r in process_wide.calls()] == [()]  # the index build only


def test_a_spent_budget_still_refuses_a_call_owned_by_an_enclosing_handler(fp: FakeProvider) -> None:
    tokenspy.set_handler(TokenSpyHandler())
    tracker = Tracker()
    engine = _engine(fp, openai_llm(fp), TokenSpyHandler(tracker=tracker))
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        with pytest.warns(UserWarning, match="over its budget"):
            engine.query("What is the capital of France?")
        with pytest.raises(BudgetExceededError):
            engine.query("What is the capital of France?")  # its retrieval embedding is refused
    # The index build, then one query (embedding and chat): the second query sent nothing.
    assert len(fp.requests) == 3
    assert len(session.calls) == len(tracker.calls()) == 2


def test_a_handler_added_to_one_default_built_component_reaches_all_of_them(fp: FakeProvider) -> None:
    # LlamaIndex's own behaviour, as documented: `CallbackManager([])` shares Settings' handler list.
    process_wide, mine = TokenSpyHandler(), TokenSpyHandler()
    tokenspy.set_handler(process_wide)
    llm, embed = openai_llm(fp), openai_embedding(fp)
    llm.callback_manager.add_handler(mine)
    assert embed.callback_manager.handlers is Settings.callback_manager.handlers
    embed.get_text_embedding("Paris")
    [embedding] = mine.calls()
    assert_matches(embedding, logged(fp, "/v1/embeddings")[0], EMBED_MODEL)
    assert process_wide.calls() == []
