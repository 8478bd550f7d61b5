"""One LLM call, one record: exact usage when the provider sends it, estimates when it does not,
partial when the caller stops reading, failures recorded."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from li_helpers import MODEL, assert_matches, logged, openai_llm
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import MockLLM
from openai import APIError, RateLimitError

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import DEFAULT_REPLY, FakeProvider
from tokenspy_core.store import load_records
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def only_call() -> tokenspy.CallRecord:
    records = tokenspy.calls()
    assert len(records) == 1, records
    return records[0]


# -- exact usage ----------------------------------------------------------------------------------

def test_chat_records_raw_usage_with_cached_and_reasoning_tokens(global_handler: TokenSpyHandler) -> None:
    with FakeProvider(cached_tokens=8, reasoning_tokens=3) as fp:
        openai_llm(fp).chat(QUESTION)
        record = only_call()
        usage = logged(fp)[0]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 8
    assert_matches(record, usage)
    assert record.reasoning_tokens == 3
    assert (record.usage_source, record.streamed, record.partial, record.status) == (
        "provider", False, False, "finished")
    assert (record.model, record.provider, record.operation) == (MODEL, "openai", "chat")


def test_complete_on_a_chat_model_is_one_call(global_handler: TokenSpyHandler, fp: FakeProvider) -> None:
    response = openai_llm(fp).complete("Say hi")
    assert response.text == DEFAULT_REPLY
    assert_matches(only_call(), logged(fp)[0])


async def test_achat_records_exact_usage(global_handler: TokenSpyHandler, fp: FakeProvider) -> None:
    await openai_llm(fp).achat(QUESTION)
    assert_matches(only_call(), logged(fp)[0])


def test_stream_chat_with_include_usage_is_exact(global_handler: TokenSpyHandler, fp: FakeProvider) -> None:
    text = "".join(chunk.delta or "" for chunk in openai_llm(fp).stream_chat(QUESTION))
    assert text == DEFAULT_REPLY
    record = only_call()
    assert_matches(record, logged(fp)[0])
    assert record.streamed and not record.partial and record.usage_source == "provider"
    assert record.ttft_s is not None


async def test_astream_complete_with_include_usage_is_exact(global_handler: TokenSpyHandler,
                                                            fp: FakeProvider) -> None:
    stream = await openai_llm(fp).astream_complete("Say hi")
    async for _ in stream:
        pass
    record = only_call()
    assert_matches(record, logged(fp)[0])
    assert record.streamed


# -- estimated usage ------------------------------------------------------------------------------

def test_stream_without_provider_usage_is_estimated_from_text_and_prompt(global_handler: TokenSpyHandler,
                                                                         fp: FakeProvider) -> None:
    for _ in openai_llm(fp, stream_usage=False).stream_chat(QUESTION):
        pass
    record = only_call()
    assert record.cost_femto is not None
    assert fp.requests[0]["stream_options"] is None  # llama-index-llms-openai does not ask for usage
    assert record.usage_source == "estimated"
    assert record.estimated_fields == ("input_tokens", "output_tokens")
    assert fp.requests[0]["usage"] is None  # the provider sent none
    # The same request with usage on: the fake counts like the estimator (tiktoken, OpenAI's chat
    # framing), so here the estimate equals what the provider reports.
    for _ in openai_llm(fp).stream_chat(QUESTION):
        pass
    reported = logged(fp)[1]
    assert record.input_tokens == count_message_tokens(PROMPT, MODEL) == reported["prompt_tokens"]
    assert record.output_tokens == count_tokens(DEFAULT_REPLY, MODEL) == reported["completion_tokens"]


def test_mock_llm_chat_is_one_call_although_it_runs_complete_inside(global_handler: TokenSpyHandler) -> None:
    llm = MockLLM(max_tokens=4)
    llm.chat(QUESTION)
    record = only_call()  # MockLLM.chat -> MockLLM.complete: two LlamaIndex LLM events, one model call
    assert (record.model, record.provider, record.usage_source) == (None, None, "estimated")
    assert record.input_tokens == count_message_tokens(PROMPT, None)
    assert record.output_tokens == count_tokens("text text text text", None)
    assert record.cost_femto is None  # no model, no price: never shown as $0


def test_mock_llm_stream_chat_is_one_streamed_call(global_handler: TokenSpyHandler) -> None:
    text = "".join(c.delta or "" for c in MockLLM(max_tokens=3).stream_chat(QUESTION))
    record = only_call()
    assert record.streamed and record.output_tokens == count_tokens(text, None) == 3


# -- streams the caller stops reading -------------------------------------------------------------

def test_break_after_two_chunks_and_close_records_partial(global_handler: TokenSpyHandler,
                                                          fp: FakeProvider) -> None:
    stream = openai_llm(fp).stream_chat(QUESTION)
    consumed = ""
    for i, chunk in enumerate(stream):
        consumed += chunk.delta or ""
        if i == 1:
            break
    assert tokenspy.calls() == []  # nothing ends while the stream is merely suspended
    stream.close()
    record = only_call()
    assert (record.status, record.partial, record.streamed) == ("aborted", True, True)
    assert record.output_tokens == count_tokens(consumed, MODEL) > 0  # what was read, not the whole reply
    assert record.input_tokens == count_message_tokens(PROMPT, MODEL)  # the prompt was billed
    assert record.usage_source == "estimated"


async def test_async_break_and_aclose_records_partial(global_handler: TokenSpyHandler,
                                                      fp: FakeProvider) -> None:
    stream = await openai_llm(fp).astream_chat(QUESTION)
    consumed = ""
    async for chunk in stream:
        consumed += chunk.delta or ""
        break
    await stream.aclose()
    record = only_call()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens(consumed, MODEL)


def test_stream_dropped_without_close_ends_partial_when_collected(global_handler: TokenSpyHandler,
                                                                  fp: FakeProvider) -> None:
    stream = openai_llm(fp).stream_chat(QUESTION)
    first = next(iter(stream)).delta or ""
    del stream
    gc.collect()
    record = only_call()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens(first, MODEL)


def test_stream_never_read_is_a_failed_call_without_tokens(global_handler: TokenSpyHandler,
                                                           fp: FakeProvider) -> None:
    stream = openai_llm(fp).stream_chat(QUESTION)
    del stream
    gc.collect()
    record = only_call()
    assert fp.requests == []  # LlamaIndex sends the request on the first read
    assert (record.status, record.total_tokens, record.partial) == ("failed", 0, False)
    assert record.error == "stream discarded before it was read"


ABANDONED_AT_EXIT = """
    import sys
    import tokenspy
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI
    from tokenspy.llamaindex import TokenSpyHandler
    from tokenspy.testing import FakeProvider

    tokenspy.set_handler(TokenSpyHandler())
    fp = FakeProvider(reply=" ".join(["word"] * 40)).start()
    llm = OpenAI(model="gpt-4o-mini", api_base=fp.openai_base_url, api_key="x", max_retries=0)
    question = [ChatMessage(role="user", content="hi")]
    list(llm.stream_chat(question))  # a stream watched before the store exists
    tokenspy.init(persist=sys.argv[1])
    stream = llm.stream_chat(question)
    read = ""
    for i, chunk in enumerate(stream):
        read += chunk.delta or ""
        if i == 3:
            break  # no close, and `stream` is still referenced when the script ends
    print(read, end="")
"""


def test_a_stream_still_referenced_at_exit_is_persisted_partial(tmp_path: Path) -> None:
    script, db = tmp_path / "abandon.py", tmp_path / "usage.db"
    script.write_text(textwrap.dedent(ABANDONED_AT_EXIT), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TOKENSPY_DB"}
    done = subprocess.run([sys.executable, str(script), str(db)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # Ended at exit before the store's exit flush (which was set up after the first stream), and
    # priced then: interpreter teardown, which can no longer price it, makes no record.
    assert "no price known" not in done.stderr
    [record] = load_records(db)
    assert (record.model, record.status, record.partial, record.streamed) == (MODEL, "aborted", True, True)
    assert record.input_tokens == count_message_tokens([{"role": "user", "content": "hi"}], MODEL)
    assert done.stdout and record.output_tokens == count_tokens(done.stdout, MODEL)
    assert record.cost_femto is not None


# -- errors ----------------------------------------------------------------------------------------

def test_http_429_is_recorded_as_failed_without_billing(global_handler: TokenSpyHandler,
                                                        fp: FakeProvider) -> None:
    fp.set_flags("http429")
    with pytest.raises(RateLimitError):
        openai_llm(fp).chat(QUESTION)
    record = only_call()
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("RateLimitError")
    assert (record.total_tokens, record.partial) == (0, False)


def test_http_429_on_a_stream_is_recorded_as_failed(global_handler: TokenSpyHandler,
                                                     fp: FakeProvider) -> None:
    fp.set_flags("http429")
    with pytest.raises(RateLimitError):
        for _ in openai_llm(fp).stream_chat(QUESTION):
            pass
    record = only_call()
    assert (record.status, record.total_tokens, record.partial) == ("failed", 0, False)


def test_midstream_error_records_partial_failure_with_the_text_read(global_handler: TokenSpyHandler,
                                                                    fp: FakeProvider) -> None:
    fp.set_flags("midstream")
    consumed = ""
    with pytest.raises(APIError):
        for chunk in openai_llm(fp).stream_chat(QUESTION):
            consumed += chunk.delta or ""
    record = only_call()
    assert (record.status, record.partial) == ("failed", True)
    assert consumed and record.output_tokens == count_tokens(consumed, MODEL)
    assert record.input_tokens == count_message_tokens(PROMPT, MODEL)


def test_handler_stats_and_report_cover_only_its_calls(fp: FakeProvider) -> None:
    mine, other = TokenSpyHandler(), TokenSpyHandler()
    openai_llm(fp, handlers=[mine]).chat(QUESTION)
    openai_llm(fp, handlers=[other]).chat(QUESTION)
    openai_llm(fp).chat(QUESTION)  # no handler on it, none installed globally: not tracked
    assert len(tokenspy.calls()) == 2
    assert mine.stats()["total_calls"] == other.stats()["total_calls"] == 1
    assert_matches(mine.calls()[0], logged(fp)[0])
    assert "gpt-4o-mini" in (mine.report("json") or "")


def test_a_call_served_at_the_flex_tier_is_priced_at_its_rates() -> None:
    # The adapter's own reading of `raw.service_tier`, with no session for the SDK layer to merge into.
    from decimal import Decimal

    import httpx
    from llama_index.llms.openai import OpenAI

    def reply(request: httpx.Request) -> httpx.Response:
        tier = json.loads(request.content)["service_tier"]
        choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-5",
                                         "service_tier": tier, "choices": [choice],
                                         "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}})

    tokenspy.set_handler(TokenSpyHandler())
    llm = OpenAI(model="gpt-5", api_key="test", api_base="http://mock/v1", additional_kwargs={"service_tier": "flex"},
                 http_client=httpx.Client(transport=httpx.MockTransport(reply)))
    assert llm.chat([ChatMessage(role="user", content="x")]).raw.service_tier == "flex"
    [record] = tokenspy.calls()
    assert record.cost == (1000 * Decimal("0.625") + 1000 * Decimal("5")) / 1_000_000  # gpt-5 flex, not 1.25/10


def test_a_providers_parts_over_their_whole_are_left_out(global_handler: TokenSpyHandler, fp: FakeProvider) -> None:
    # A gateway's usage: priced as reported, 1,000 cached tokens were billed on top of an 8-token prompt.
    import httpx

    def gateway(request: httpx.Request) -> httpx.Response:
        with httpx.Client() as client:
            body = client.send(request).json()
        body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1000}
        body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 500}
        return httpx.Response(200, json=body)

    openai_llm(fp, http_client=httpx.Client(transport=httpx.MockTransport(gateway))).chat(QUESTION)
    record = only_call()
    billed = logged(fp)[0]
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        billed["prompt_tokens"], 0, billed["completion_tokens"], 0)
    assert record.usage_source == "provider"
