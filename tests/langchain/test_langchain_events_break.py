"""`astream_events` of a chain, left after a few chunks: the consumer got each chunk from inside the
model's `on_llm_new_token`, before LangChain added it to the partial message it reports with the error.
The record counts every chunk the consumer got."""

from __future__ import annotations

import httpx
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from lc_helpers import GPT, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens


async def test_a_chain_events_stream_left_early_counts_the_last_chunk_received(
        fp: FakeProvider, aio: httpx.AsyncClient) -> None:
    fp.reply = " ".join(f"w{i}" for i in range(40))
    fp.chunk_delay = 0.02
    handler = TokenSpyHandler()
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp, GPT, aio=aio)
             | StrOutputParser()).with_config(run_name="qa")
    received = ""
    events = chain.astream_events({"q": "hi"}, version="v2", config={"callbacks": [handler]})
    async for event in events:
        if event["event"] == "on_chat_model_stream":
            received += event["data"]["chunk"].content
            if received.count("w") == 3:
                break
    await events.aclose()
    (record,) = tokenspy.calls()
    assert received == "w0 w1 w2"
    assert (record.status, record.partial, record.span_path) == ("aborted", True, ("qa",))
    assert record.output_tokens == count_tokens(received, GPT) == 6
    assert handler.open_runs == 0
