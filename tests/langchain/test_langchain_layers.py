"""Where the layers meet: a generate() batch, two handlers on one run, a cache replayed as a stream, an
abandoned tool-call stream and a profile run as a LangGraph node each make one record per provider call
with the exact numbers, under the right level."""

from __future__ import annotations

import json
import warnings
from typing import Any, TypedDict

import httpx
import openai
import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import OpenAI
from lc_helpers import CLAUDE, GPT, KEY, MINI, Expected, anthropic_chat, from_log, linear_graph, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import active_call
from tokenspy_core.tokenizer import count_tokens

# Three prompts of different lengths: their requests tell apart by their usage.
LISTS = [[HumanMessage("hi")], [HumanMessage("hello there, my friend")], [HumanMessage("one two three four five six")]]


def completions(request: httpx.Request) -> httpx.Response:
    """An OpenAI completions endpoint answering every prompt of a request in one response, as the real one."""
    prompts = json.loads(request.content)["prompt"]
    return httpx.Response(200, json={
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": GPT,
        "choices": [{"text": f" answer {i}", "index": i, "finish_reason": "stop", "logprobs": None}
                    for i in range(len(prompts))],
        "usage": {"prompt_tokens": 10 * len(prompts), "completion_tokens": 3 * len(prompts),
                  "total_tokens": 13 * len(prompts)}})


def test_a_completion_llms_batch_is_one_request_counted_once(sdk_layer: None, handler: TokenSpyHandler) -> None:
    # BaseLLM.batch is one generate() with every prompt (batch_size=3) and one request: LangChain gives that
    # request's usage to the first prompt's run, and 0 to the others. The SDK layer, which sees the request
    # inside the session, adds no record of its own.
    sent: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return completions(request)

    llm = OpenAI(model=GPT, base_url="http://fake/v1", api_key=KEY, max_retries=0,
                 http_client=httpx.Client(transport=httpx.MockTransport(transport)))
    with tokenspy.session("nightly") as s:
        llm.batch(["a", "b", "c"], config={"callbacks": [handler]})
    assert len(sent) == 1
    records = tokenspy.calls()
    assert [(r.input_tokens, r.output_tokens, r.usage_source) for r in records] == [
        (30, 9, "provider"), (0, 0, "provider"), (0, 0, "provider")]
    assert s.calls == 3 and s.tokens == 39
    assert tokenspy.stats()["tree"]["cost_femto"] == Expected(30, 9).cost_femto
    assert handler.open_runs == 0


@pytest.mark.filterwarnings("ignore:Unexpected type for token usage")  # langchain-openai's, on its llm_output
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_chat_generate_with_several_message_lists_counts_each_request_once(
        fp: FakeProvider, aio: httpx.AsyncClient, sdk_layer: None, handler: TokenSpyHandler, mode: str) -> None:
    # All the runs start before any request; the requests of agenerate() may go out in any order. Each
    # run's on_llm_end brings its own usage: the SDK layer's records of the requests are dropped.
    llm = openai_chat(fp, aio=aio)
    with tokenspy.session("s") as s:
        if mode == "sync":
            llm.generate(LISTS, callbacks=[handler])
        else:
            await llm.agenerate(LISTS, callbacks=[handler])
    assert len(fp.requests) == 3 and s.calls == 3
    by_input = sorted(tokenspy.calls(), key=lambda r: r.input_tokens)
    wire = sorted((from_log(entry) for entry in fp.requests), key=lambda e: e.input_tokens)
    assert all(e.matches(r) and r.usage_source == "provider" for e, r in zip(wire, by_input, strict=True))
    assert s.tokens == sum(e.input_tokens + e.output_tokens for e in wire)
    assert active_call() is None and handler.open_runs == 0


def test_a_request_failing_inside_a_generate_ends_its_batch(fp: FakeProvider, sdk_layer: None,
                                                             handler: TokenSpyHandler) -> None:
    # A sync generate() raises at the first failed request (here the second) and ends only that run: the
    # batch must not stay the call an SDK request made later in this context merges into (and is dropped).
    sent = 0

    def fail_the_second(request: httpx.Request) -> None:
        nonlocal sent
        sent += 1
        if sent == 2:
            request.headers["x-fake-flags"] = "http500"

    llm = openai_chat(fp, http_client=httpx.Client(event_hooks={"request": [fail_the_second]}))
    with tokenspy.session("s") as s:
        with pytest.raises(openai.InternalServerError):
            llm.generate(LISTS, callbacks=[handler])
        openai.OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0).chat.completions.create(
            model=MINI, messages=[{"role": "user", "content": "after"}])
    assert [entry["outcome"] for entry in fp.requests] == ["completed", "error", "completed"]
    failed, after = tokenspy.calls()  # (LangChain never ends the first run, answered, nor the third)
    assert (failed.status, failed.total_tokens) == ("failed", 0)
    assert from_log(fp.requests[2]).matches(after) and after.span_path == ("s",)
    assert s.calls == 2 and active_call() is None


@pytest.mark.parametrize("streamed", [False, True])
def test_two_handlers_with_their_own_trackers_both_get_the_sdk_layers_usage(
        fp: FakeProvider, sdk_layer: None, streamed: bool) -> None:
    # ChatOpenAI with a base_url streams with no usage: only the SDK layer has it (reasoning included), and
    # each handler's record of the run gets it, not only the one LangChain called last.
    fp.reasoning_tokens = 200
    tokenspy.set_handler(TokenSpyHandler())
    tenant = TokenSpyHandler(tracker=tokenspy.Tracker())
    llm = openai_chat(fp)
    if streamed:
        list(llm.stream("hello there", config={"callbacks": [tenant]}))
    else:
        llm.invoke("hello there", config={"callbacks": [tenant]})
    wire = from_log(fp.requests[0])
    assert wire.reasoning_tokens == 200
    (shared,), (own,) = tokenspy.calls(), tenant.calls()
    for record in (shared, own):
        assert wire.matches(record) and record.usage_source == "provider" and record.streamed is streamed


def test_two_handlers_with_their_own_trackers_both_keep_the_tool_and_retriever_levels(fp: FakeProvider) -> None:
    # A second handler on a tool's or retriever's run made it transparent in its own tree: a model called
    # inside went to ("tools",) in the shared tracker, which `tokenspy.report()` shows, and to
    # ("tools", "summarize") in the tenant's.
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda

    mini = openai_chat(fp, model=MINI)

    @tool
    def summarize(text: str) -> str:
        """Summarize a text."""
        return str(mini.invoke("summarize " + text).content)

    class HyDE(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content=str(mini.invoke("hypothetical answer to " + query).content))]

    tools = RunnableLambda(lambda text: summarize.invoke(text)).with_config(run_name="tools")
    rag = (HyDE() | RunnableLambda(lambda docs: docs[0].page_content)).with_config(run_name="rag")
    tokenspy.set_handler(TokenSpyHandler())
    tenant = TokenSpyHandler(tracker=tokenspy.Tracker())
    tools.invoke("the parcel was late", config={"callbacks": [tenant]})
    rag.invoke("where is it", config={"callbacks": [tenant]})
    expected = [("tools", "summarize"), ("rag", "HyDE")]
    assert [r.span_path for r in tokenspy.calls()] == expected
    assert [r.span_path for r in tenant.calls()] == expected


def test_a_tool_called_directly_under_two_handlers_is_one_level_in_each_tree(fp: FakeProvider) -> None:
    # No parent run: the second handler's tool span went under the first handler's span of the same run,
    # which it found current: ("summarize", "summarize") in the shared tracker.
    mini = openai_chat(fp, model=MINI)

    @tool
    def summarize(text: str) -> str:
        """Summarize a text."""
        return str(mini.invoke("summarize " + text).content)

    tokenspy.set_handler(TokenSpyHandler())
    tenant = TokenSpyHandler(tracker=tokenspy.Tracker())
    summarize.invoke("the parcel was late", config={"callbacks": [tenant]})
    assert [r.span_path for r in tokenspy.calls()] == [("summarize",)]
    assert [r.span_path for r in tenant.calls()] == [("summarize",)]


def test_a_cache_hit_replayed_as_a_stream_is_no_stream(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    # A cached message comes back as chunks (streaming=True) or v3 protocol events (a graph's v3 stream):
    # no provider call was made, so no stream and no time to first token.
    set_llm_cache(InMemoryCache())
    streaming = openai_chat(fp, streaming=True, stream_usage=True)
    for _ in range(2):
        streaming.invoke("hi", config={"callbacks": [handler]})

    class State(TypedDict):
        text: str

    def answer(state: State) -> dict[str, str]:
        return {"text": str(openai_chat(fp, stream_usage=True).invoke("hello").content)}

    graph = linear_graph(State, ("answer", answer))
    graph.invoke({"text": ""}, config={"callbacks": [handler]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LangGraph: "the v3 streaming protocol is experimental"
        for _ in graph.stream_events({"text": ""}, config={"callbacks": [handler]}, version="v3"):
            pass
    assert len(fp.requests) == 2
    paid_stream, hit_stream, paid, hit_events = tokenspy.calls()
    assert not paid_stream.cache_hit and paid_stream.streamed and paid_stream.ttft_s is not None
    assert not paid.cache_hit
    for hit in (hit_stream, hit_events):
        assert (hit.cache_hit, hit.streamed, hit.ttft_s, hit.cost_femto) == (True, False, None, 0)


def test_an_abandoned_tool_call_stream_counts_the_arguments_streamed_so_far(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    # Parsed, the partial arguments `{"city":` are `{}`: the estimate counts the raw text streamed.
    @tool
    def weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    stream = anthropic_chat(fp).bind_tools([weather]).stream("Weather in Paris?", config={"callbacks": [handler]})
    pieces = []
    for chunk in stream:
        pieces.extend(part["args"] for part in chunk.tool_call_chunks if part["args"])
        if pieces:
            break
    stream.close()
    assert pieces == ['{"city":']
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.estimated_fields[-1:]) == ("aborted", True, ("output_tokens",))
    assert record.output_tokens == count_tokens('weather{"city":', CLAUDE)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_profile_run_as_a_node_holds_a_raw_sdk_call_made_before_any_model_call(
        fp: FakeProvider, sdk_layer: None, mode: str) -> None:
    # LangGraph does not make a node current; the profile opened in it goes under it all the same, from
    # its start: a raw SDK call it makes before any LangChain call is the node's too.
    tokenspy.set_handler(TokenSpyHandler())
    llm = openai_chat(fp, stream_usage=True)
    client = openai.OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0)
    aclient = openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0)

    class State(TypedDict):
        text: str

    @tokenspy.profile
    def research(state: State) -> dict[str, Any]:
        client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "classify"}])
        return {"text": str(llm.invoke("answer").content)}

    @tokenspy.profile(name="research")
    async def aresearch(state: State) -> dict[str, Any]:
        await aclient.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "classify"}])
        return {"text": str((await llm.ainvoke("answer")).content)}

    graph = linear_graph(State, ("research", research if mode == "sync" else aresearch))
    if mode == "sync":
        graph.invoke({"text": ""})
    else:
        await graph.ainvoke({"text": ""})
        await aclient.close()
    records = tokenspy.calls()
    assert [r.model for r in records] == [MINI, GPT]
    assert [r.span_path for r in records] == [("LangGraph", "research", "research")] * 2
    assert all(from_log(entry).matches(r) for entry, r in zip(fp.requests, records, strict=True))



def test_a_streaming_completion_llms_invoke_keeps_the_sdk_layers_usage(sdk_layer: None, handler: TokenSpyHandler,
                                                                         fp: FakeProvider) -> None:
    # langchain-openai's streamed `_generate` returns `llm_output={"token_usage": {}}` out of any batch: that
    # says nothing, and was read as 0 tokens over the exact usage the SDK layer had merged ($0, "provider").
    llm = OpenAI(model=GPT, base_url=fp.openai_base_url, api_key=KEY, max_retries=0, streaming=True)
    with tokenspy.session("s"):
        llm.invoke("Write a haiku", config={"callbacks": [handler]})
    (entry,) = fp.requests
    (record,) = tokenspy.calls()
    assert (record.input_tokens, record.output_tokens) == (entry["usage"]["prompt_tokens"],
                                                           entry["usage"]["completion_tokens"]) != (0, 0)
    assert record.usage_source == "provider" and record.cost_femto


async def test_calls_ended_in_langchains_own_tasks_do_not_chain_up_in_a_long_lived_task(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    # agenerate ends its runs in tasks of their own: the caller's context still has the ended call set, and
    # every next call kept the one before it alive (with its span): ~5 KB per request, for ever.
    from tokenspy_core.call import _active

    model = openai_chat(fp, aio=aio)
    for i in range(20):
        async with tokenspy.session("job", tags={"n": i}):
            await model.ainvoke("hi", config={"callbacks": [handler]})
    chain, call = 0, _active.get()
    while call is not None:
        chain, call = chain + 1, call._prev_active
    assert chain <= 1  # it was 20: each call holding the one before it
    assert len(tokenspy.calls()) == 20
