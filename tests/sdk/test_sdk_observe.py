"""observe()/unobserve(), when calls are tracked, layer dedupe, budgets, guards, (un)instrumentation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import anthropic
import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient
from sdk_helpers import GPT_4O, MESSAGES, assert_exact, openai_expected
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy import openai as tokenspy_openai
from tokenspy._observe import instrument_sdks, uninstrument_sdks
from tokenspy._sdk_patch import original_of
from tokenspy.testing import FakeProvider
from tokenspy_core import BudgetExceededError, Call, default_tracker


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **kwargs)


def test_observe_returns_the_same_client_and_is_idempotent(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    for client in (oai, ant):
        cls = type(client)
        assert tokenspy.observe(client) is client
        assert tokenspy.observe(client) is client
        assert type(client) is cls
    assert isinstance(tokenspy.observe(openai.AsyncOpenAI(api_key="k")), openai.AsyncOpenAI)


def test_unobserved_client_outside_any_profile_is_not_tracked(oai: openai.OpenAI) -> None:
    chat(oai)
    assert tokenspy.calls() == []


def test_observed_client_is_tracked_outside_any_profile(oai: openai.OpenAI, fp: FakeProvider) -> None:
    tokenspy.observe(oai)
    chat(oai)
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.span_path == ()


def test_unobserve_stops_tracking(oai: openai.OpenAI) -> None:
    tokenspy.unobserve(tokenspy.observe(oai))
    chat(oai)
    assert tokenspy.calls() == []


def test_observe_tags_reach_the_records(oai: openai.OpenAI) -> None:
    tokenspy.observe(oai, tags={"team": "search"})
    chat(oai)
    assert only_record().tags == {"team": "search"}


def test_with_options_copy_of_an_observed_client_is_observed(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    tokenspy.observe(oai, tags={"via": "copy"})
    chat(oai.with_options(timeout=30))
    tokenspy.observe(ant)
    ant.with_options(timeout=30).messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)
    assert [r.provider for r in tokenspy.calls()] == ["openai", "anthropic"]
    assert tokenspy.calls()[0].tags == {"via": "copy"}


@pytest.mark.parametrize("thing", [object(), "client", None])
def test_observe_rejects_what_is_not_an_sdk_client(thing: Any) -> None:
    with pytest.raises(TypeError, match="openai or anthropic client"):
        tokenspy.observe(thing)
    with pytest.raises(TypeError, match="openai or anthropic client"):
        tokenspy.unobserve(thing)


def test_observe_rejects_unknown_options(oai: openai.OpenAI) -> None:
    with pytest.raises(TypeError, match="unexpected option"):
        tokenspy.observe(oai, sample_rate=0.5)


def test_auto_instrument_off_skips_profiled_calls_but_not_observed_clients(oai: openai.OpenAI) -> None:
    other = openai.OpenAI(base_url=oai.base_url, api_key="k", max_retries=0)
    tokenspy.init(auto_instrument=False)
    tokenspy.observe(other)
    with tokenspy.session("s"):
        chat(oai)
        chat(other)
    assert len(tokenspy.calls()) == 1


def test_one_record_when_nested_in_an_active_outer_call(oai: openai.OpenAI, fp: FakeProvider) -> None:
    """A framework adapter already tracks this request: the SDK layer only contributes exact usage."""
    outer = Call(default_tracker(), "gpt-4o", provider="openai", streamed=True)
    outer.activate()
    text = "".join(c.choices[0].delta.content or "" for c in chat(oai, stream=True))
    assert tokenspy.calls() == []  # the SDK layer did not record on its own
    outer.add_text(text)
    outer.finish()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_one_record_for_a_raw_response_call_nested_in_an_outer_call(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    """The way LangChain calls the SDK (`with_raw_response`, then `.parse()`), inside its own call."""
    outer = Call(default_tracker(), "gpt-4o", provider="openai")
    outer.activate()
    with tokenspy.session("s"):
        oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES).parse()
    outer.finish()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_budget_exceeded_raises_before_the_request_is_sent(oai: openai.OpenAI, fp: FakeProvider) -> None:
    @tokenspy.profile(budget_usd=0.000001, on_exceeded="raise")
    def two_calls() -> None:
        chat(oai)
        chat(oai, stream=True)

    with pytest.raises(BudgetExceededError):
        two_calls()
    assert len(fp.requests) == 1
    assert len(tokenspy.calls()) == 1


def test_budget_warning_points_at_the_users_line_not_into_the_sdk(oai: openai.OpenAI, fp: FakeProvider) -> None:
    with pytest.warns(UserWarning, match="over its budget") as caught, tokenspy.session("s", budget_usd=0.000001):
        chat(oai)
    (warning,) = [w for w in caught if "over its budget" in str(w.message)]
    assert warning.filename == __file__  # the line in `chat` above that made the request


def test_internal_error_never_breaks_the_users_stream(
    oai: openai.OpenAI, fp: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENSPY_STRICT", "0")

    def broken(self: Any, chunk: Any) -> bool:
        raise RuntimeError("tokenspy bug")

    monkeypatch.setattr(tokenspy_openai._ChatChunks, "on_item", broken)
    with tokenspy.session("s"):
        text = "".join(c.choices[0].delta.content or "" for c in chat(oai, stream=True) if c.choices)
    assert text == fp.reply
    assert only_record().status == "finished"


def test_internal_error_before_the_request_lets_the_call_through(
    oai: openai.OpenAI, fp: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENSPY_STRICT", "0")
    monkeypatch.setattr(tokenspy_openai, "start_call", lambda *args, **kwargs: 1 / 0)
    with tokenspy.session("s"):
        assert chat(oai).choices[0].message.content == fp.reply
    assert tokenspy.calls() == []


def test_uninstrument_restores_the_sdk_methods(oai: openai.OpenAI) -> None:
    assert original_of(SyncAPIClient.request) is not None
    uninstrument_sdks()
    assert original_of(SyncAPIClient.request) is None and original_of(AsyncAPIClient.request) is None
    assert original_of(openai.OpenAI.with_options) is None
    tokenspy.observe(oai)  # observe() patches again, on its own
    assert original_of(SyncAPIClient.request) is not None
    instrument_sdks()


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TOKENSPY_STRICT": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_tokenspy_and_profiling_import_no_sdk() -> None:
    assert (
        _run("""
        import sys, tokenspy
        @tokenspy.profile
        def f(): return 1
        f()
        with tokenspy.session("s"): pass
        print(sorted(m for m in ("openai", "anthropic") if m in sys.modules))
    """)
        == "[]"
    )


def test_sdk_imported_after_the_first_profile_is_patched_on_import() -> None:
    assert (
        _run("""
        import tokenspy
        with tokenspy.session("s"): pass
        from openai._base_client import SyncAPIClient
        import anthropic._base_client as a
        from tokenspy._sdk_patch import original_of
        print(original_of(SyncAPIClient.request) is not None,
              original_of(a.SyncAPIClient.request) is not None)
    """)
        == "True True"
    )


def test_the_price_data_is_loaded_before_the_first_tracked_request() -> None:
    # Loaded at the first call's end, in a request thread, genai-prices imported httpx2 there: another
    # thread's openai request, which looks httpx2 up in `sys.modules`, found it half imported and raised
    # (a fresh process's first burst of concurrent calls: 2 to 10 of 20 failed).
    assert _run("""
        import sys, openai, tokenspy
        loaded = lambda: "genai_prices.data" in sys.modules
        before = loaded()
        tokenspy.observe(openai.OpenAI(api_key="k"))
        print(before, loaded())
    """) == "False True"
