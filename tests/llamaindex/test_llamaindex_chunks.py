"""The per-token path: plain text deltas are collected without the payload helpers, every other
chunk (the first, or one with usage, reasoning or raw data) is read in full, and a CustomLLM's
chat -> complete stream is read once, from the chat side."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from li_helpers import MODEL
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import BaseModel, ConfigDict

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler, payloads
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy_core import config
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
WORDS = ["The", " capital", " is", " Paris", "."]


class ScriptedLLM(CustomLLM):
    """A CustomLLM streaming `WORDS`; `extras(i)` gives chunk i's additional_kwargs (no raw)."""

    extras: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(WORDS))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for i, word in enumerate(WORDS):
                text += word
                extra = self.extras(i) if self.extras is not None else {}
                yield CompletionResponse(text=text, delta=word, additional_kwargs=extra)

        return gen()


def only_call() -> tokenspy.CallRecord:
    records = tokenspy.calls()
    assert len(records) == 1, records
    return records[0]


def usage_so_far(i: int) -> dict[str, int]:
    return {"prompt_tokens": 40, "completion_tokens": i + 1}


@pytest.mark.parametrize("method", ["stream_chat", "stream_complete"])
def test_plain_deltas_make_the_whole_text(global_handler: TokenSpyHandler, method: str) -> None:
    llm = MockLLM(max_tokens=50)
    arg: Any = QUESTION if method == "stream_chat" else "Say something"
    text = "".join(c.delta or "" for c in getattr(llm, method)(arg))
    record = only_call()
    assert record.streamed and record.status == "finished" and record.ttft_s is not None
    assert record.output_tokens == count_tokens(text, None) == 50


def test_a_plain_stream_stopped_early_counts_what_was_read(global_handler: TokenSpyHandler) -> None:
    stream = MockLLM(max_tokens=50).stream_chat(QUESTION)
    consumed = ""
    for i, chunk in enumerate(stream):
        consumed += chunk.delta or ""
        if i == 9:
            break
    stream.close()
    record = only_call()
    assert (record.status, record.partial) == ("aborted", True)
    assert 0 < record.output_tokens == count_tokens(consumed, None) < 50
    assert record.input_tokens == count_message_tokens(PROMPT, None)


def test_a_plain_stream_collected_mid_way_counts_what_was_read(global_handler: TokenSpyHandler) -> None:
    stream = MockLLM(max_tokens=50).stream_chat(QUESTION)
    chunks = iter(stream)
    consumed = "".join(next(chunks).delta or "" for _ in range(7))
    del stream, chunks
    gc.collect()
    record = only_call()
    assert (record.status, record.partial) == ("aborted", True)
    assert 0 < record.output_tokens == count_tokens(consumed, None) < 50


def test_usage_in_a_custom_llms_chunks_is_read_from_the_chat_side(global_handler: TokenSpyHandler) -> None:
    # The completion chunks (merged into the chat call) are not read: LlamaIndex's conversion puts
    # their additional_kwargs in the chat message, where the chat call finds them.
    llm = ScriptedLLM(extras=usage_so_far)
    for _ in llm.stream_chat(QUESTION):
        pass
    record = only_call()
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (40, 5, "provider")
    stream = llm.stream_chat(QUESTION)
    for i, _ in enumerate(stream):
        if i == 1:
            break
    stream.close()
    partial = tokenspy.calls()[1]
    assert (partial.status, partial.input_tokens, partial.output_tokens) == ("aborted", 40, 2)
    assert partial.usage_source == "provider"


def test_a_chunk_with_extras_after_plain_ones_keeps_the_text_in_order(global_handler: TokenSpyHandler) -> None:
    # A reasoning delta on one chunk only: that chunk takes the full path, the others the plain one.
    config.capture_content = True  # the record keeps the text it counted (reset by the suite)
    llm = ScriptedLLM(extras=lambda i: {"thinking_delta": " hmm"} if i == 2 else {})
    for _ in llm.stream_complete("Say it"):
        pass
    record = only_call()
    assert record.response == "The capital is hmm Paris."
    assert record.output_tokens == count_tokens(record.response, MODEL)


def test_an_own_completion_stream_beside_a_merged_one(global_handler: TokenSpyHandler) -> None:
    # While a CustomLLM's chat stream is open (its completion merged), a completion stream of its
    # own is read as usual.
    chat = iter(MockLLM(max_tokens=20).stream_chat(QUESTION))
    next(chat)
    text = "".join(c.delta or "" for c in MockLLM(max_tokens=30).stream_complete("Go on"))
    for _ in chat:
        pass
    first, second = tokenspy.calls()
    assert second.output_tokens == 20 and first.output_tokens == count_tokens(text, None) == 30
    assert not TAP._completions and not TAP._llm


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")
    field: int = 1

    @property
    def computed(self) -> int:
        return self.field + 1


def test_get_reads_pydantic_models_like_getattr() -> None:
    shape = Shape(extra_key=3)
    assert [payloads.get(shape, k) for k in ("field", "computed", "extra_key", "absent")] == [1, 2, 3, None]
    assert payloads.get({"a": 1}, "a") == 1 and payloads.get(None, "a") is None
    assert payloads.get(SimpleNamespace(a=1), "a") == 1 and payloads.get(SimpleNamespace(), "a") is None
