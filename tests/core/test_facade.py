"""The public names users type, their behaviour, and clear errors on bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import subprocess
import sys
import warnings
from decimal import Decimal

import pytest

import tokenspy
from tokenspy_core import BudgetExceededError, default_tracker


def _fake_llm_call(model: str = "gpt-4o", tokens: int = 100) -> None:
    tokenspy.record(model, input_tokens=tokens, output_tokens=tokens // 10)


def test_public_names_exist() -> None:
    for name in ("profile", "session", "stats", "calls", "report", "reset", "set_price", "record", "start_call",
                 "BudgetExceededError", "observe", "set_handler", "init"):
        assert callable(getattr(tokenspy, name)), name


def test_profile_on_every_kind_of_function_nests_spans() -> None:
    @tokenspy.profile
    def inner() -> None:
        _fake_llm_call()

    @tokenspy.profile(name="sync_outer")
    def outer() -> None:
        inner()

    @tokenspy.profile
    async def async_fn() -> None:
        await asyncio.sleep(0)
        inner()

    @tokenspy.profile
    def gen() -> object:
        _fake_llm_call()
        yield 1
        _fake_llm_call()
        yield 2

    @tokenspy.profile
    async def agen() -> object:
        _fake_llm_call()
        yield 1

    async def consume() -> None:
        async for _ in agen():
            pass

    outer()
    asyncio.run(async_fn())
    assert list(gen()) == [1, 2]
    asyncio.run(consume())
    paths = [r.span_path for r in tokenspy.calls()]
    assert paths == [("sync_outer", "inner"), ("async_fn", "inner"), ("gen",), ("gen",), ("agen",)]


def test_generator_span_does_not_leak_into_the_consumer() -> None:
    @tokenspy.profile
    def numbers() -> object:
        yield 1
        yield 2

    for _ in numbers():
        _fake_llm_call()  # the consumer's call, between the generator's steps
    assert {r.span_path for r in tokenspy.calls()} == {()}


def test_profile_keeps_function_metadata_and_return_values() -> None:
    @tokenspy.profile
    def documented(x: int) -> int:
        """Doubles."""
        return 2 * x

    assert documented(3) == 6
    assert documented.__name__ == "documented" and documented.__doc__ == "Doubles."


def test_session_counts_exactly_its_block() -> None:
    _fake_llm_call(tokens=10)
    with tokenspy.session("work") as s:
        _fake_llm_call(tokens=100)
        _fake_llm_call(tokens=200)
    _fake_llm_call(tokens=10)
    assert int(s.calls) == 2 and s.calls == 2 and len(s.calls) == 2
    assert s.tokens == 110 + 220
    assert s.cost == pytest.approx((300 * 2.5 + 30 * 10) / 1e6)
    assert s.cost_str == "$0.0011"
    assert [r.input_tokens for r in s.calls] == [100, 200]
    assert s.stats()["total_calls"] == 2
    assert tokenspy.stats()["total_calls"] == 4


async def test_async_with_session() -> None:
    async with tokenspy.session("a") as s:
        _fake_llm_call()
    assert s.calls == 1


def test_stats_has_the_documented_keys() -> None:
    with tokenspy.session("s"):
        _fake_llm_call()
    stats = tokenspy.stats()
    for key in ("total_cost_usd", "total_tokens", "input_tokens", "output_tokens", "total_calls", "by_function",
                "by_model", "calls", "tree"):
        assert key in stats, key
    assert set(stats["tree"]) >= {"name", "kind", "cost_usd", "tokens", "calls", "children"}
    assert stats["tree"]["children"][0]["name"] == "s" and stats["tree"]["children"][0]["kind"] == "session"
    call = stats["calls"][0]
    for key in ("model", "provider", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                "reasoning_tokens", "total_tokens", "cost_usd", "usage_source", "streamed", "partial", "error",
                "span_path", "latency_s", "ttft_s"):
        assert key in call, key
    assert "prompt" not in call and "response" not in call


def test_call_records_have_the_documented_attributes() -> None:
    _fake_llm_call()
    (r,) = tokenspy.calls()
    assert (r.model, r.provider, r.input_tokens, r.output_tokens, r.total_tokens) == ("gpt-4o", None, 100, 10, 110)
    assert r.cached_input_tokens == r.cache_write_tokens == r.reasoning_tokens == 0
    assert r.usage_source == "provider" and r.streamed is False and r.partial is False and r.error is None
    assert r.span_path == () and r.latency_s >= 0 and r.ttft_s is None
    assert r["model"] == "gpt-4o"


def test_report_json_returns_the_stats() -> None:
    _fake_llm_call()
    data = json.loads(tokenspy.report(format="json") or "")
    assert data["total_calls"] == 1 and data["by_model"]["gpt-4o"]["input_tokens"] == 100


def test_reset_forgets_calls() -> None:
    _fake_llm_call()
    tokenspy.reset()
    assert tokenspy.stats()["total_calls"] == 0 and tokenspy.calls() == []


def test_set_price_overrides_bundled_prices() -> None:
    tokenspy.set_price("gpt-4o", input=1, output=2)
    tokenspy.record("gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000)
    assert tokenspy.calls()[0].cost_usd == 3.0


def test_set_price_takes_the_one_hour_cache_write_rate() -> None:
    tokenspy.set_price("my-claude", input=3, output=15, cached_input=0.3, cache_write=3.75, cache_write_1h=6)
    call = tokenspy.start_call("my-claude", stream=False)
    call.set_usage(input_tokens=300_000, output_tokens=0, cache_write_tokens=200_000, cache_write_1h_tokens=100_000)
    record = call.finish()
    # 100k uncached * $3 + 100k 5-minute writes * $3.75 + 100k 1-hour writes * $6, per million
    assert record is not None and record.cost == Decimal("1.275")
    tokenspy.set_price("my-claude", input=3, output=15, cache_write=3.75)  # without it: the 5-minute rate
    call = tokenspy.start_call("my-claude", stream=False)
    call.set_usage(input_tokens=200_000, output_tokens=0, cache_write_tokens=100_000, cache_write_1h_tokens=100_000)
    record = call.finish()
    assert record is not None and record.cost == Decimal("0.675")


def test_unknown_model_costs_none_warns_once_and_still_counts_tokens(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "tokenspy"):
        warnings.simplefilter("always")
        for _ in range(3):
            tokenspy.record("acme-llm-9000", input_tokens=7, output_tokens=3)
    (warning,) = [w for w in caught if "acme-llm-9000" in str(w.message)]
    assert warning.filename == __file__  # it points at the caller's line, not into tokenspy
    assert len([r for r in caplog.records if "acme-llm-9000" in r.getMessage()]) == 1
    stats = tokenspy.stats()
    assert stats["by_model"]["acme-llm-9000"]["cost_usd"] is None
    assert stats["total_tokens"] == 30 and stats["unpriced_calls"] == 3
    assert all(r.cost_usd is None for r in tokenspy.calls())


def test_budget_warns_once_naming_span_spent_and_budget() -> None:
    @tokenspy.profile(budget_usd=0.001)
    def spender() -> None:
        for _ in range(3):
            tokenspy.record("gpt-4o", input_tokens=400, output_tokens=0)  # $0.001 each

    with pytest.warns(UserWarning, match=r"'spender' spent \$0\.002, over its budget of \$0\.001") as w:
        spender()
    (warning,) = [x for x in w if "budget" in str(x.message)]
    assert warning.filename == __file__
    assert tokenspy.stats()["total_calls"] == 3


def test_warnings_as_errors_lose_no_record_and_still_charge_every_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    # `python -W error` / pytest's `filterwarnings = error`: a warning raised while a call ends would
    # have lost its record (and skipped the budgets after the one that warned).
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, "tokenspy"):
        warnings.simplefilter("error")
        with tokenspy.session("outer", budget_usd=0.001) as outer, tokenspy.session("inner", budget_usd=0.001):
            tokenspy.record("acme-llm-9001", input_tokens=7, output_tokens=3)
            call = tokenspy.start_call("gpt-4o", stream=True)
            call.set_usage(input_tokens=800, output_tokens=0)  # $0.002: over both budgets
            call.finish()
    assert [r.model for r in tokenspy.calls()] == ["acme-llm-9001", "gpt-4o"]
    assert outer.cost == pytest.approx(0.002) and outer.calls == 2
    logged = [r.getMessage() for r in caplog.records]
    assert sum("acme-llm-9001" in m for m in logged) == 1
    assert any("'outer' spent $0.002," in m for m in logged) and any("'inner' spent" in m for m in logged)


def test_budget_raise_lets_the_crossing_call_finish_and_refuses_the_next() -> None:
    done: list[int] = []

    @tokenspy.profile(budget_usd=0.001, on_exceeded="raise")
    def spender() -> None:
        for i in range(5):
            tokenspy.record("gpt-4o", input_tokens=300, output_tokens=0)  # $0.00075 each
            done.append(i)

    with pytest.warns(UserWarning), pytest.raises(tokenspy.BudgetExceededError) as exc:
        spender()
    assert done == [0, 1]  # the second call crossed and returned normally; the third was refused
    assert exc.value.span == "spender" and exc.value.budget_usd == 0.001
    assert tokenspy.stats()["total_calls"] == 2


def test_session_budget_applies_to_start_call() -> None:
    with pytest.warns(UserWarning), tokenspy.session("capped", budget_usd=0, on_exceeded="raise"):
        tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
        with pytest.raises(tokenspy.BudgetExceededError):
            tokenspy.start_call("gpt-4o")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: tokenspy.profile(budget_usd="1"), TypeError, "budget_usd"),
        (lambda: tokenspy.profile(budget_usd=-1), ValueError, "budget_usd"),
        (lambda: tokenspy.profile(on_exceeded="explode"), ValueError, "on_exceeded"),
        (lambda: tokenspy.profile(name=3), TypeError, "name"),
        (lambda: tokenspy.profile(42), TypeError, "decorates a function"),
        (lambda: tokenspy.profile(colour="red"), TypeError, "colour"),
        (lambda: tokenspy.session(5), TypeError, "session name"),
        (lambda: tokenspy.set_price("m", input=-1, output=1), ValueError, "input"),
        (lambda: tokenspy.set_price("m", input="cheap", output=1), TypeError, "input"),
        (lambda: tokenspy.set_price("m", input=1, output=float("nan")), ValueError, "output"),
        (lambda: tokenspy.set_price("", input=1, output=1), TypeError, "model"),
        (lambda: tokenspy.record("m", input_tokens="5", output_tokens=1), TypeError, "input_tokens"),
        (lambda: tokenspy.record("m", input_tokens=-5, output_tokens=1), ValueError, "input_tokens"),
        (lambda: tokenspy.record("m", input_tokens=5, output_tokens=1, cached_input_tokens=6), ValueError, "cached"),
        (lambda: tokenspy.record(None, input_tokens=5, output_tokens=1), TypeError, "model"),
        (lambda: tokenspy.report(format="xml"), ValueError, "format"),
        (lambda: tokenspy.init(persist=3), TypeError, "persist"),
        (lambda: tokenspy.init(otel="yes"), TypeError, "otel"),
        (lambda: tokenspy.init(unknown_option=True), TypeError, "unknown_option"),
        (lambda: tokenspy.set_handler(object()), TypeError, "set_handler"),
        (lambda: tokenspy.record("m", input_tokens=5, output_tokens=1, tags="user=bob"), TypeError, "tags"),
        (lambda: tokenspy.record("m", input_tokens=5, output_tokens=1, provider=123), TypeError, "provider"),
        (lambda: tokenspy.start_call("m", tags=["a"]), TypeError, "tags"),
    ],
)
def test_bad_input_gets_a_clear_error(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]


def test_internal_errors_are_logged_once_and_never_reach_the_user(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import tokenspy_core._guard as guard
    from tokenspy_core import Call

    monkeypatch.setenv("TOKENSPY_STRICT", "0")
    monkeypatch.setattr(guard, "_seen", set())

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr("tokenspy_core.call.count_tokens", broken)
    with caplog.at_level(logging.ERROR, "tokenspy"):
        for _ in range(3):
            call = Call(default_tracker(), "gpt-4o", streamed=True)
            call.add_text("hi")
            assert call.finish() is None
    errors = [r for r in caplog.records if r.name == "tokenspy" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "call end" in errors[0].getMessage()


def test_importing_tokenspy_imports_no_framework_or_sdk() -> None:
    code = ("import sys, tokenspy, tokenspy_core, tokenspy.testing\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('langchain', 'langchain_core', 'llama_index', 'openai', 'anthropic', 'langgraph', 'opentelemetry')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sdks_marked_absent_are_left_alone_silently() -> None:
    # `sys.modules[name] = None` is the standard way to mark an optional dependency absent.
    code = ("import sys, logging\n"
            "sys.modules['openai'] = None\nsys.modules['anthropic'] = None\n"
            "import tokenspy\n"
            "@tokenspy.profile\n"
            "def work():\n"
            "    tokenspy.record('gpt-4o', input_tokens=10, output_tokens=5)\n"
            "work()\n"
            "print(tokenspy.stats()['total_tokens'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["15"]
    assert "internal error" not in done.stderr, done.stderr


def test_token_estimation_needs_no_network() -> None:
    code = ("import socket\n"
            "def refuse(*a, **k): raise OSError('network disabled')\n"
            "socket.socket.connect = refuse\nsocket.create_connection = refuse\nsocket.getaddrinfo = refuse\n"
            "from tokenspy_core.tokenizer import count_tokens\n"
            "print(count_tokens('hello world', 'gpt-4o'), count_tokens('hello world', 'gpt-4'),"
            " count_tokens('hello world', 'some-unknown-model'))")
    env = {"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["2", "2", "2"]


def test_unpriced_only_totals_are_none_not_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tokenspy.session("unpriced") as s:
            tokenspy.record("acme-llm-9001", input_tokens=7, output_tokens=3)
    assert tokenspy.stats()["total_cost_usd"] is None and s.cost is None and s.cost_str == "unpriced"
    assert tokenspy.stats()["total_cost_usd_exact"] is None
    tokenspy.record("gpt-4o", input_tokens=400, output_tokens=0)  # one priced call: the total is what is known
    assert tokenspy.stats()["total_cost_usd"] == 0.001 and tokenspy.stats()["unpriced_calls"] == 1
    assert tokenspy.stats()["total_cost_usd_exact"] == "0.001000000000000"


def test_budget_in_decimal_usd() -> None:
    from decimal import Decimal

    with pytest.warns(UserWarning, match="budget"), tokenspy.session("d", budget_usd=Decimal("0.0015"),
                                                                    on_exceeded="raise"):
        tokenspy.record("gpt-4o", input_tokens=400, output_tokens=0)
        tokenspy.record("gpt-4o", input_tokens=400, output_tokens=0)
        with pytest.raises(tokenspy.BudgetExceededError):
            tokenspy.start_call("gpt-4o")


def test_set_handler_refuses_a_handler_class_and_keeps_the_installed_one() -> None:
    pytest.importorskip("langchain_core")
    from tokenspy.langchain import TokenSpyHandler

    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    try:
        with pytest.raises(TypeError, match="instance"):
            tokenspy.set_handler(TokenSpyHandler)
        from tokenspy._api import get_handler

        assert get_handler("langchain") is handler
    finally:
        tokenspy.set_handler(None)


def test_profile_above_staticmethod_and_classmethod() -> None:
    class Agent:
        @tokenspy.profile
        @staticmethod
        def plan(x: int) -> int:
            tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
            return x

        @tokenspy.profile(name="build")
        @classmethod
        def make(cls, x: int) -> tuple[type, int]:
            tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
            return cls, x

    assert Agent().plan(1) == 1 and Agent.plan(2) == 2
    assert Agent().make(3) == (Agent, 3) and Agent.make(4) == (Agent, 4)
    assert [r.span_path for r in tokenspy.calls()] == [("plan",), ("plan",), ("build",), ("build",)]


def test_init_persist_to_a_directory_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="persist"):
        tokenspy.init(persist=str(tmp_path))


def test_report_json_to_an_open_file() -> None:
    import io
    import json

    tokenspy.record("gpt-4o", input_tokens=400, output_tokens=0)
    out = io.StringIO()
    assert tokenspy.report(format="json", file=out) is None
    assert json.loads(out.getvalue())["total_calls"] == 1


def test_budget_messages_show_small_amounts_as_they_are() -> None:
    # An embeddings job's budget: six decimals showed both amounts as $0.000000.
    tokenspy.set_price("tiny-embed", input=0.02, output=0)
    with (pytest.raises(BudgetExceededError, match=r"spent \$0\.00002 of \$0\.00001;"),
          tokenspy.session("embed", budget_usd=Decimal("0.00001"), on_exceeded="raise")):
        with pytest.warns(UserWarning, match=r"'embed' spent \$0\.00002, over its budget of \$0\.00001$"):
            tokenspy.record("tiny-embed", input_tokens=1000, output_tokens=0)
        tokenspy.record("tiny-embed", input_tokens=1, output_tokens=0)


def test_record_takes_one_hour_cache_writes_at_their_own_price() -> None:
    tokenspy.set_price("m-1h", input=1, output=1, cache_write=2, cache_write_1h=4)
    record = tokenspy.record("m-1h", input_tokens=1000, output_tokens=0, cache_write_tokens=1000,
                             cache_write_1h_tokens=400)
    assert record is not None and record.cache_write_1h_tokens == 400
    assert record.cost == Decimal("0.0028")  # 600 five-minute writes at $2/M, 400 one-hour ones at $4/M
    with pytest.raises(ValueError, match="cache_write_1h_tokens are part of cache_write_tokens"):
        tokenspy.record("m-1h", input_tokens=1000, output_tokens=0, cache_write_tokens=10, cache_write_1h_tokens=11)
    with pytest.raises(TypeError, match="cache_write_1h_tokens must be an int"):
        tokenspy.record("m-1h", input_tokens=1000, output_tokens=0, cache_write_1h_tokens=1.5)  # type: ignore[arg-type]


def test_budget_exceeded_error_is_made_from_any_amount_and_pickles() -> None:
    import pickle

    error = BudgetExceededError("span", 0.5, 1)  # as a user or a test double builds it
    assert str(error) == "tokenspy budget exceeded for 'span': spent $0.5 of $1; the call was refused before it started"
    back = pickle.loads(pickle.dumps(BudgetExceededError("job", Decimal("0.00002"), Decimal("0.00001"))))
    assert isinstance(back, BudgetExceededError)  # raised in a worker process, it reaches the parent as itself
    assert (back.span, back.spent_usd, back.budget_usd) == ("job", 0.00002, 0.00001)
    assert "spent $0.00002 of $0.00001" in str(back)
