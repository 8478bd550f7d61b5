"""openai Chat Completions, sync: exact usage, the hidden usage chunk, every early end, errors."""

from __future__ import annotations

import copy
import gc
import types
import weakref
from typing import Any

import openai
import pytest
from sdk_helpers import GPT_4O, MESSAGES, assert_exact, cost, openai_expected

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

PROMPT_ESTIMATE = count_message_tokens(MESSAGES, "gpt-4o")


def stream(client: openai.OpenAI, **kwargs: Any) -> openai.Stream[Any]:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **kwargs)


def only_record() -> tokenspy.CallRecord:
    records = tokenspy.calls()
    assert len(records) == 1, records
    return records[0]


def assert_partial(record: tokenspy.CallRecord, consumed_text: str) -> None:
    """Abandoned before the usage arrived: prompt and consumed text estimated, priced."""
    output = count_tokens(consumed_text, "gpt-4o")
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, output)
    assert record.cost == cost(GPT_4O, input=PROMPT_ESTIMATE, output=output)


def test_non_stream_chat_records_exact_usage_cost_and_span(oai: openai.OpenAI, fp: FakeProvider) -> None:
    @tokenspy.profile
    def ask() -> str:
        return oai.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content or ""

    assert ask() == fp.reply
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert (record.provider, record.model, record.span_path, record.streamed) == (
        "openai",
        "gpt-4o",
        ("ask",),
        False,
    )
    assert record.cached_input_tokens == 4 and record.cache_write_tokens == 2


def test_stream_hides_injected_usage_chunk_and_records_exact_usage(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    @tokenspy.profile
    def stream_response() -> list[Any]:
        return [chunk.choices[0].delta.content for chunk in stream(oai)]  # chunk.choices[0]: no IndexError

    contents = stream_response()
    assert "".join(c or "" for c in contents) == fp.reply
    sent = fp.requests[0]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["chunks_sent"] == len(contents) + 1  # exactly one chunk hidden: the usage-only one
    record = only_record()
    assert_exact(record, openai_expected(sent["usage"]), GPT_4O)
    assert record.streamed and record.span_path == ("stream_response",) and record.ttft_s is not None


def test_stream_chunks_reach_the_caller_unchanged_and_in_order(oai: openai.OpenAI, fp: FakeProvider) -> None:
    untracked = [c.model_dump(exclude={"id"}) for c in stream(oai) if c.choices]
    with tokenspy.session("tracked"):
        tracked = [c.model_dump(exclude={"id"}) for c in stream(oai)]
    assert tracked == untracked


def test_stream_is_the_sdk_stream_type(oai: openai.OpenAI) -> None:
    with tokenspy.session("s"):
        s = stream(oai)
        assert isinstance(s, openai.Stream)
        assert type(s).__name__ == "Stream" and repr(s).startswith("<openai.Stream object")
        s.close()


def test_explicit_include_usage_true_keeps_usage_chunk_and_caller_dict(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    options = {"include_usage": True}
    before = copy.deepcopy(options)
    with tokenspy.session("s"):
        chunks = list(stream(oai, stream_options=options))
    assert options == before
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the caller asked for it: shown
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_explicit_include_usage_false_is_respected_and_output_estimated(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    with tokenspy.session("s"):
        text = "".join(
            c.choices[0].delta.content or "" for c in stream(oai, stream_options={"include_usage": False})
        )
    assert fp.requests[0]["stream_options"] == {"include_usage": False}
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, count_tokens(text, "gpt-4o"))


def test_caller_stream_options_without_include_usage_gets_it_on_a_copy(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    options = {"include_obfuscation": False}
    with tokenspy.session("s"):
        chunks = list(stream(oai, stream_options=options))
    assert options == {"include_obfuscation": False}
    assert fp.requests[0]["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert all(c.choices for c in chunks)
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_stream_options_in_extra_body_is_the_callers_choice(oai: openai.OpenAI, fp: FakeProvider) -> None:
    extra = {"stream_options": {"include_usage": True}}
    with tokenspy.session("s"):
        chunks = list(stream(oai, extra_body=extra))
    assert extra == {"stream_options": {"include_usage": True}}
    assert chunks[-1].choices == []  # asked for by the caller: not hidden
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_next_on_stream_skips_the_hidden_usage_chunk(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        s = stream(oai)
        chunks = []
        while True:
            try:
                chunks.append(next(s))
            except StopIteration:
                break
    assert all(c.choices for c in chunks)
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_break_after_three_chunks_records_partial(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"):
        s = stream(oai)
        consumed = []
        for i, chunk in enumerate(s):
            consumed.append(chunk.choices[0].delta.content or "")
            if i == 2:
                break
        assert_partial(only_record(), "".join(consumed))  # recorded at the break, not later
        assert not s.response.is_closed  # the SDK keeps it open after a break; so do we
        s.close()
    assert s.response.is_closed
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"
    assert len(tokenspy.calls()) == 1


def test_close_mid_stream_records_partial_and_closes_response(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"):
        s = stream(oai)
        first, second = next(s), next(s)
        s.close()
    assert s.response.is_closed
    assert_partial(
        only_record(), (first.choices[0].delta.content or "") + (second.choices[0].delta.content or "")
    )
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


def test_leaving_with_block_mid_stream_records_partial(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"), stream(oai) as s:
        text = next(s).choices[0].delta.content or ""
        text += next(s).choices[0].delta.content or ""
    assert s.response.is_closed
    assert_partial(only_record(), text)


def test_stream_garbage_collected_unconsumed_records_partial(oai: openai.OpenAI) -> None:
    with tokenspy.session("s"):
        s = stream(oai)
    del s
    gc.collect()
    assert_partial(only_record(), "")


def test_midstream_error_fails_call_and_reraises_sdk_error(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("midstream")
    consumed = []
    with tokenspy.session("s"), pytest.raises(openai.APIError, match="midstream error") as raised:
        for chunk in stream(oai):
            consumed.append(chunk.choices[0].delta.content or "")
    assert type(raised.value) is openai.APIError
    record = only_record()
    assert (record.status, record.partial) == ("failed", True)
    assert record.error == "APIError: fake provider: midstream error"
    assert (record.input_tokens, record.output_tokens) == (
        PROMPT_ESTIMATE,
        count_tokens("".join(consumed), "gpt-4o"),
    )


@pytest.mark.parametrize(
    ("flag", "error"), [("http429", openai.RateLimitError), ("http500", openai.InternalServerError)]
)
@pytest.mark.parametrize("streamed", [False, True])
def test_http_error_records_failed_call_and_raises_sdk_error(
    oai: openai.OpenAI, fp: FakeProvider, flag: str, error: type[Exception], streamed: bool
) -> None:
    fp.set_flags(flag)
    with tokenspy.session("s"), pytest.raises(error) as raised:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=streamed)
    assert type(raised.value) is error
    record = only_record()
    assert (record.status, record.partial, record.streamed) == ("failed", False, streamed)
    assert record.error is not None and record.error.startswith(error.__name__)
    assert (record.input_tokens, record.output_tokens, record.cost) == (0, 0, 0)  # nothing was billed


def test_stream_helper_get_final_completion_with_exact_usage(oai: openai.OpenAI, fp: FakeProvider) -> None:
    @tokenspy.profile
    def helper() -> Any:
        with oai.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as s:
            deltas = [e.delta for e in s if e.type == "content.delta"]
            return "".join(deltas), s.get_final_completion()

    text, final = helper()
    assert text == final.choices[0].message.content == fp.reply
    assert final.usage is None  # as without tokenspy: the helper does not ask for usage
    assert fp.requests[0]["stream_options"] == {"include_usage": True}
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.span_path == ("helper",)


def test_stream_helper_break_inside_with_records_partial(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"), oai.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as s:
        text = ""
        for event in s:
            if event.type == "content.delta" and event.delta:
                text += event.delta
                break
    assert_partial(only_record(), text)
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


def test_tool_call_stream_records_exact_usage_and_ttft(oai: openai.OpenAI, fp: FakeProvider) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    with tokenspy.session("s"):
        chunks = list(stream(oai, tools=tools))
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.ttft_s is not None


def test_connection_cut_mid_stream_fails_call_and_reraises(oai: openai.OpenAI, fp: FakeProvider) -> None:
    import httpx

    fp.set_flags("cut")
    consumed = []
    with tokenspy.session("s"), pytest.raises(httpx.RemoteProtocolError):
        for chunk in stream(oai):
            consumed.append(chunk.choices[0].delta.content or "")
    record = only_record()
    assert (record.status, record.partial) == ("failed", True)
    assert record.error is not None and record.error.startswith("RemoteProtocolError")
    assert record.output_tokens == count_tokens("".join(consumed), "gpt-4o")


@pytest.mark.parametrize("flag", ["cut", "midstream"])
def test_a_stream_failing_before_its_first_text_bills_the_prompt(oai: openai.OpenAI, fp: FakeProvider,
                                                                 flag: str) -> None:
    # One word: the failure comes right after the role chunk, before any text. Nothing had marked the answer
    # as begun, so the record was failed with 0 tokens, $0 and usage_source "provider" (which reported
    # nothing); a `break` at the same chunk estimates the prompt as billed, and so does this now.
    fp.reply = "Paris"
    fp.set_flags(flag)
    with tokenspy.session("s"), pytest.raises(Exception):  # noqa: B017 - the SDK's own, checked by name below
        for chunk in stream(oai):
            assert not chunk.choices or not chunk.choices[0].delta.content
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("failed", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, 0)
    assert record.cost == cost(GPT_4O, input=PROMPT_ESTIMATE, output=0)
    assert record.error is not None and record.error.startswith(("RemoteProtocolError", "APIError"))


def test_stream_subclass_made_by_another_instrumentation_is_tracked_without_class_switch(
    oai: openai.OpenAI, fp: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like logfire, which passes a fresh `Stream` subclass per call: tracked, no class cached per call."""
    from openai._base_client import SyncAPIClient

    from tokenspy import _sdk_stream

    patched = SyncAPIClient.request

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stream_cls") is not None:
            kwargs["stream_cls"] = types.new_class("OtherStream", (kwargs["stream_cls"],))
        return patched(self, *args, **kwargs)

    monkeypatch.setattr(SyncAPIClient, "request", request)
    cached = dict(_sdk_stream._subclasses)
    with tokenspy.session("s"):
        s = stream(oai)
        assert type(s).__name__ == "OtherStream"
        text = "".join(c.choices[0].delta.content or "" for c in s)
    assert text == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert _sdk_stream._subclasses == cached


def test_close_hook_is_released_at_the_first_close(oai: openai.OpenAI, fp: FakeProvider) -> None:
    # httpx responses sit in reference cycles: what hangs off one (tokenspy's tracker, the call, the
    # request options) would otherwise wait for the cyclic garbage collector.
    gc.disable()
    try:
        with tokenspy.session("s"):
            s = stream(oai)
            for _ in s:
                pass
        assert "close" not in vars(s.response)  # the SDK closed it at the end of the body
        tracker = weakref.ref(s._tokenspy_stream)
        s.close()  # closing again: the class's own close
        assert s.response.is_closed
        del s
        assert tracker() is None  # freed by reference counting
    finally:
        gc.enable()
    assert only_record().status == "finished"


def test_a_close_hook_installed_after_tokenspy_is_kept(oai: openai.OpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"):
        s = stream(oai)
    response = s.response
    ours = response.close
    seen: list[str] = []

    def theirs() -> None:
        seen.append("theirs")
        ours()

    response.close = theirs
    next(s)
    s.close()
    s.close()
    assert seen == ["theirs", "theirs"]  # not removed by tokenspy
    assert response.is_closed
    assert only_record().status == "aborted"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_an_estimated_prompt_counts_the_tools_offered(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        for _ in stream(oai, tools=[WEATHER_TOOL], stream_options={"include_usage": False}):
            pass
    record = only_record()
    assert record.usage_source == "estimated"
    billed = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL]).usage
    # The fake provider bills the tool schemas as their compact JSON, as tokenspy estimates them.
    assert billed is not None and record.input_tokens == billed.prompt_tokens > PROMPT_ESTIMATE


def _requests(oai: openai.OpenAI, ant: Any) -> dict[str, Any]:
    def chat_stream() -> None:
        for _ in stream(oai):
            pass

    def responses_stream() -> None:
        for _ in oai.responses.create(model="gpt-4o", input="hi", stream=True):
            pass

    def anthropic_stream() -> None:
        for _ in ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES, stream=True):
            pass

    return {
        "chat": lambda: oai.chat.completions.create(model="gpt-4o", messages=MESSAGES),
        "chat stream": chat_stream,
        "responses": lambda: oai.responses.create(model="gpt-4o", input="hi"),
        "responses stream": responses_stream,
        "completions": lambda: oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi"),
        "anthropic": lambda: ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES),
        "anthropic stream": anthropic_stream,
    }


@pytest.mark.parametrize("kind", ["chat", "chat stream", "responses", "responses stream", "completions",
                                  "anthropic", "anthropic stream"])
def test_a_request_leaves_nothing_for_the_garbage_collector(
        oai: openai.OpenAI, ant: Any, fp: FakeProvider, kind: str) -> None:
    # A request's plan refers to its call: in a reference cycle it would keep the call (and an
    # unfinished call's end) waiting for the cyclic garbage collector.
    from tokenspy._sdk_request import Plan

    request = _requests(oai, ant)[kind]
    request()  # the SDK's own one-time setup
    gc.collect()
    gc.disable()
    try:
        with tokenspy.session("s"):
            request()
        assert [o for o in gc.get_objects() if isinstance(o, Plan)] == []
    finally:
        gc.enable()
    assert [(r.status, r.span_path) for r in tokenspy.calls()] == [("finished", ("s",))]


def test_a_failed_deepcopy_of_a_tracked_stream_reports_nothing_of_tokenspys(
        oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """`copy.deepcopy` raises for a stream, as for the bare SDK's; the half-built copy of tokenspy's
    tracker it leaves behind is collected without an "Exception ignored" of its own."""
    unraisable: list[str] = []
    monkeypatch.setattr("sys.unraisablehook", lambda info: unraisable.append(repr(info.object)))
    tracked = stream(tokenspy.observe(oai))
    with pytest.raises(TypeError):
        copy.deepcopy(tracked)
    gc.collect()
    for _ in tracked:
        pass
    assert [entry for entry in unraisable if "StreamTracker" in entry] == []
    assert only_record().status == "finished"
