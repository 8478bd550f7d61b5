"""Optimization hints: each kind from constructed calls, with its saving worked out by hand.

Prices are set with `PRICES.set_price` (USD per million tokens), so a token at $2/M costs 2e-6 USD =
2e9 femto-dollars; the comments give each expected saving in micro-dollars (1e-6 USD = 1e9 femto).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

from tokenspy_core import PRICES, Call, Span, Tracker, config
from tokenspy_core.hints import CHEAPER_MODEL, Hint, compute_hints

MICRO = 10**9  # femto-dollars in a micro-dollar


def _call(tracker: Tracker, model: str, span: Span | None, *, input: int, output: int = 0, cached: int = 0,
          write: int = 0, end: str = "finish", prompt: Any = None) -> None:
    call = Call(tracker, model, parent=span, prompt=prompt, streamed=True)
    call.set_usage(input_tokens=input, output_tokens=output, cached_input_tokens=cached,
                   cache_write_tokens=write)
    if end == "finish":
        call.finish()
    elif end == "abort":
        call.add_text("partial answer")
        call.abort()
    else:
        call.fail(RuntimeError(end))


def _kind(hints: list[Hint], kind: str) -> list[Hint]:
    return [h for h in hints if h.kind == kind]


@pytest.fixture
def acme() -> None:
    # Models outside the downgrade map, so only the hint under test can appear.
    PRICES.set_price("acme-large", input=2, output=8, cached_input=0.5)
    PRICES.set_price("acme-claude", input=3, output=15, cached_input=0.3, cache_write=3.75)
    PRICES.set_price("acme-nocache", input=2, output=8)


# -- downgrade -------------------------------------------------------------------------------------
def test_downgrade_gpt4o_saving_is_recorded_cost_minus_same_tokens_at_mini() -> None:
    PRICES.set_price("gpt-4o", input=2.5, output=10, cached_input=1.25)
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6, cached_input=0.075)
    tracker = Tracker()
    span = Span("answer", "function")
    _call(tracker, "gpt-4o", span, input=1200, output=300)
    _call(tracker, "gpt-4o", span, input=800, cached=400, output=100)
    # gpt-4o:      1200*2.5 + 300*10 = 6000;  400*2.5 + 400*1.25 + 100*10 = 2500   -> 8500 µ$
    # gpt-4o-mini: 1200*0.15 + 300*0.6 = 360; 400*0.15 + 400*0.075 + 100*0.6 = 150 ->  510 µ$
    assert compute_hints(tracker.stats()) == [Hint(
        "downgrade", "answer", "gpt-4o", 0.00799,
        "answer, gpt-4o: gpt-4o-mini would save $0.0080 on 2 calls ($0.0085 -> $0.0005)",
        7990 * MICRO)]


def test_downgrade_recognises_dated_and_provider_prefixed_names() -> None:
    PRICES.set_price("gpt-4o", input=2.5, output=10)
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6)
    tracker = Tracker()
    _call(tracker, "openai/gpt-4o-2024-08-06", Span("a", "function"), input=1000)
    [hint] = compute_hints(tracker.stats())
    assert (hint.kind, hint.span, hint.model) == ("downgrade", "a", "openai/gpt-4o-2024-08-06")
    assert hint.saving_femto == (2500 - 150) * MICRO


def test_downgrade_claude_opus_to_sonnet_prices_cache_reads_and_writes() -> None:
    PRICES.set_price("claude-opus-4-1", input=15, output=75, cached_input=1.5, cache_write=18.75)
    PRICES.set_price("claude-sonnet-4-5", input=3, output=15, cached_input=0.3, cache_write=3.75)
    tracker = Tracker()
    parent = Span("agent", "agent")
    _call(tracker, "claude-opus-4-1-20250805", Span("plan", "node", parent), input=10_000, cached=6_000,
          write=2_000, output=500)
    # opus:   2000*15 + 6000*1.5 + 2000*18.75 + 500*75 = 114000 µ$
    # sonnet: 2000*3  + 6000*0.3 + 2000*3.75  + 500*15 =  22800 µ$
    [hint] = compute_hints(tracker.stats())
    assert (hint.kind, hint.span, hint.saving_femto) == ("downgrade", "agent/plan", 91_200 * MICRO)
    assert "claude-sonnet-4-5 would save $0.0912" in hint.text


def test_downgrade_prices_long_context_tiers_per_call() -> None:
    # genai-prices: claude-opus-4-5 $5/$25; claude-sonnet-4-5 $3/$15, $6/$22.50 past 200k input tokens.
    opus, sonnet = PRICES.rates_for("claude-opus-4-5"), PRICES.rates_for("claude-sonnet-4-5")
    assert opus is not None and sonnet is not None
    assert (opus.base.input, opus.base.output, opus.tiers) == (5000 * 10**6, 25000 * 10**6, ())
    assert (sonnet.base.input, sonnet.base.output) == (3000 * 10**6, 15000 * 10**6)
    assert [(s, r.input, r.output) for s, r in sonnet.tiers] == [(200_000, 6000 * 10**6, 22500 * 10**6)]

    tracker = Tracker()
    span = Span("rag", "function")
    for _ in range(2):
        _call(tracker, "claude-opus-4-5", span, input=150_000, output=1_000)
    # Each call stays under 200k, so sonnet's base rates apply to each, although together they pass it:
    # opus 2 * (150000*5 + 1000*25) = 1,550,000 µ$; sonnet 2 * (150000*3 + 1000*15) = 930,000 µ$.
    [hint] = compute_hints(tracker.stats())
    assert (hint.kind, hint.saving_femto) == ("downgrade", 620_000 * MICRO)


def test_downgrade_without_every_record_never_overstates_the_saving() -> None:
    # The buffer kept 1 of the 2 calls: only the summed 300k input tokens are known, so sonnet is priced
    # at its top tier (2,000 output at $22.50 + 300k input at $6 = 1,845,000 µ$ > opus's 1,550,000 µ$).
    tracker = Tracker(max_records=1)
    span = Span("rag", "function")
    for _ in range(2):
        _call(tracker, "claude-opus-4-5", span, input=150_000, output=1_000)
    assert compute_hints(tracker.stats()) == []


def test_every_cheaper_model_is_priced_and_cheaper() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unpriced name would warn
        for expensive, cheaper in CHEAPER_MODEL.items():
            big, small = PRICES.rates_for(expensive), PRICES.rates_for(cheaper)
            assert big is not None and small is not None, (expensive, cheaper)
            assert small.base.input < big.base.input, (expensive, cheaper)
            assert small.base.output < big.base.output, (expensive, cheaper)


# -- prompt caching --------------------------------------------------------------------------------
def test_cache_hint_assumes_half_of_each_prompt_is_a_shared_prefix(acme: None) -> None:
    tracker = Tracker()
    span = Span("ask", "function")
    for _ in range(4):
        _call(tracker, "acme-large", span, input=3_000, output=100)
    # prefix = 12000 * 50% / 4 = 1500 tokens/call; 3 calls read it at $0.50 instead of $2; the write is
    # free of premium (cache_write = input): 3 * 1500 * 1.5 = 6750 µ$.
    [hint] = compute_hints(tracker.stats())
    assert (hint.kind, hint.span, hint.model) == ("cache", "ask", "acme-large")
    assert hint.saving_femto == 6750 * MICRO
    assert hint.text == ("ask, acme-large: prompt caching would save ~$0.0068 on 4 calls "
                         "if half of each prompt is a shared prefix")


def test_cache_hint_charges_the_cache_write_premium(acme: None) -> None:
    tracker = Tracker()
    span = Span("summarize", "function")
    _call(tracker, "acme-claude", span, input=4_000, output=10)
    _call(tracker, "acme-claude", span, input=4_000, cached=400, output=10)
    _call(tracker, "acme-claude", span, input=4_000, output=10)
    # uncached 11600, prefix 11600 * 50% / 3 per call; 2 reads save $2.70/M each, one write costs $0.75/M
    # more: 11600 * 0.5 / 3 * (2 * 2.70 - 0.75) = 8990 µ$.
    [hint] = _kind(compute_hints(tracker.stats()), "cache")
    assert hint.saving_femto == 8990 * MICRO


@pytest.mark.parametrize(("model", "calls", "input", "cached"), [
    ("acme-large", 4, 3_000, 600),    # already 20% read from cache
    ("acme-large", 2, 3_000, 0),      # too few calls
    ("acme-large", 4, 2_000, 0),      # assumed prefix 1,000 tokens: under the 1,024 providers cache
    ("acme-nocache", 4, 3_000, 0),    # cache reads cost as much as input
], ids=["already-cached", "few-calls", "small-prompts", "no-discount"])
def test_no_cache_hint_when_it_would_not_apply(acme: None, model: str, calls: int, input: int,
                                               cached: int) -> None:
    tracker = Tracker()
    span = Span("ask", "function")
    for _ in range(calls):
        _call(tracker, model, span, input=input, cached=cached, output=100)
    assert compute_hints(tracker.stats()) == []


# -- abandoned streams -----------------------------------------------------------------------------
def test_partial_hint_is_the_prompt_cost_of_abandoned_streams(acme: None) -> None:
    tracker = Tracker()
    span = Span("chat", "function")
    _call(tracker, "acme-large", span, input=5_000, output=50, end="abort")
    _call(tracker, "acme-large", span, input=3_000, cached=1_000, output=10, end="abort")
    _call(tracker, "acme-large", span, input=100, output=10)  # finished: not partial
    _call(tracker, "acme-large", span, input=900, output=10, end="reset")  # failed: the retry hint's business
    # 5000*2 + (2000*2 + 1000*0.5) = 14500 µ$ (their output is not counted)
    [hint] = _kind(compute_hints(tracker.stats()), "partial")
    assert (hint.span, hint.model, hint.saving_femto) == ("chat", "acme-large", 14_500 * MICRO)
    assert hint.text == "chat, acme-large: 2 streams abandoned early still paid $0.0145 of prompt"


# -- retries ---------------------------------------------------------------------------------------
def test_retry_hint_is_the_cost_of_the_failed_attempts(acme: None) -> None:
    tracker = Tracker()
    span = Span("extract", "function")
    _call(tracker, "acme-large", span, input=2_000, output=100, end="stream broke")  # paid 4800 µ$
    _call(tracker, "acme-large", span, input=0, end="429")   # refused before answering: nothing paid
    _call(tracker, "acme-large", span, input=2_000, output=300)
    assert compute_hints(tracker.stats()) == [Hint(
        "retry", "extract", "acme-large", 0.0048,
        "extract, acme-large: 1 failed attempt retried, $0.0048 paid for the failure", 4_800 * MICRO)]


def test_retry_needs_the_next_call_within_the_window(acme: None) -> None:
    tracker = Tracker()
    span = Span("extract", "function")
    _call(tracker, "acme-large", span, input=2_000, output=100, end="stream broke")
    _call(tracker, "acme-large", span, input=2_000, output=300)
    stats = tracker.stats()
    assert _kind(compute_hints(stats), "retry")
    failed, retry = stats["calls"]
    retry["started_at"] = failed["started_at"] + failed["latency_s"] + 31.0
    assert compute_hints(stats) == []


def test_a_failure_with_no_later_call_or_in_another_span_is_not_a_retry(acme: None) -> None:
    tracker = Tracker()
    _call(tracker, "acme-large", Span("a", "function"), input=2_000, output=100, end="stream broke")
    _call(tracker, "acme-large", Span("b", "function"), input=2_000, output=100)
    assert compute_hints(tracker.stats()) == []


def test_retry_with_captured_prompts_requires_the_same_prompt(acme: None) -> None:
    config.capture_content = True
    tracker = Tracker()
    span = Span("extract", "function")
    first = [{"role": "user", "content": "invoice 1"}]
    _call(tracker, "acme-large", span, input=2_000, output=100, end="stream broke", prompt=first)
    other = [{"role": "user", "content": "invoice 2"}]
    _call(tracker, "acme-large", span, input=2_000, output=100, prompt=other)
    assert compute_hints(tracker.stats()) == []
    _call(tracker, "acme-large", span, input=2_000, output=100, prompt=first)
    [hint] = compute_hints(tracker.stats())
    assert (hint.kind, hint.saving_femto) == ("retry", 4_800 * MICRO)


def test_captured_prompts_still_tell_retries_apart_once_capture_is_turned_off(acme: None) -> None:
    config.capture_content = True
    tracker = Tracker()
    span = Span("extract", "function")
    _call(tracker, "acme-large", span, input=2_000, output=100, end="stream broke",
          prompt=[{"role": "user", "content": "invoice 1"}])
    _call(tracker, "acme-large", span, input=2_000, output=100, prompt=[{"role": "user", "content": "invoice 2"}])
    config.capture_content = False  # a later init(): the records keep what they captured
    stats = tracker.stats()
    assert compute_hints(stats) == []
    # The hash tells the prompts apart; their text stays out of stats() with capture off.
    failed, retry = stats["calls"]
    assert "prompt" not in failed and "invoice" not in json.dumps(stats)
    assert failed["prompt_hash"] != retry["prompt_hash"] and len(failed["prompt_hash"]) == 64


def test_calls_without_a_captured_prompt_have_no_prompt_hash(acme: None) -> None:
    tracker = Tracker()
    _call(tracker, "acme-large", Span("extract", "function"), input=2_000, prompt="not captured")
    [call] = tracker.stats()["calls"]
    assert call["prompt_hash"] is None


# -- the list --------------------------------------------------------------------------------------
def test_hints_are_sorted_by_saving_and_limited() -> None:
    PRICES.set_price("gpt-4o", input=2.5, output=10)
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6)
    tracker = Tracker()
    for i in range(1, 8):
        _call(tracker, "gpt-4o", Span(f"step{i}", "function"), input=100 * i)
    hints = compute_hints(tracker.stats())
    assert [h.span for h in hints] == ["step7", "step6", "step5", "step4", "step3"]
    assert [h.saving_femto for h in hints] == [235 * i * MICRO for i in (7, 6, 5, 4, 3)]
    assert [h.span for h in compute_hints(tracker.stats(), limit=2)] == ["step7", "step6"]


def test_no_hints_when_none_applies() -> None:
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6, cached_input=0.075)
    tracker = Tracker()
    assert compute_hints(tracker.stats()) == []
    span = Span("answer", "function")
    for _ in range(5):
        _call(tracker, "gpt-4o-mini", span, input=500, output=200)
    assert compute_hints(tracker.stats()) == []


def test_unpriced_calls_give_no_hint_and_no_new_warning() -> None:
    tracker = Tracker()
    with pytest.warns(UserWarning, match="no price known"):
        _call(tracker, "gpt-4o-but-unknown-9", Span("a", "function"), input=9_000, end="abort")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_hints(tracker.stats()) == []


def test_report_lists_hints_under_the_tree_unless_turned_off() -> None:
    PRICES.set_price("gpt-4o", input=2.5, output=10)
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6)
    tracker = Tracker()
    _call(tracker, "gpt-4o", Span("answer", "function"), input=1000)
    text = tracker.render()
    tree_at, hints_at = text.index("answer "), text.index("hints")
    assert tree_at < hints_at
    assert "· answer, gpt-4o: gpt-4o-mini would save $0.0024 on 1 call" in text[hints_at:]
    assert "hints" not in tracker.render(hints=False)
    data = json.loads(tracker.render("json"))
    assert data["hints"] == [{"kind": "downgrade", "span": "answer", "model": "gpt-4o", "saving_usd": 0.00235,
                              "saving_femto": 2350 * MICRO, "text": data["hints"][0]["text"]}]
    assert "hints" not in json.loads(tracker.render("json", hints=False))


def test_a_gateway_alias_priced_as_the_model_asked_for_gets_that_models_hints() -> None:
    PRICES.set_price("gpt-4o", input=2.5, output=10, cached_input=1.25)
    PRICES.set_price("gpt-4o-mini", input=0.15, output=0.6, cached_input=0.075)
    tracker = Tracker()
    span = Span("answer", "function")
    for _ in range(2):
        call = Call(tracker, "gpt-4o", parent=span, streamed=True)
        call.set_model("corp-gateway-gpt4o-prod")  # a served name no price source knows
        call.set_usage(input_tokens=1200, output_tokens=300)
        call.finish()
    [hint] = compute_hints(tracker.stats())
    # gpt-4o: 2 x (1200*2.5 + 300*10) = 12000 µ$; gpt-4o-mini: 2 x (1200*0.15 + 300*0.6) = 720 µ$
    assert (hint.kind, hint.model, hint.saving_femto) == ("downgrade", "corp-gateway-gpt4o-prod", 11280 * MICRO)


def test_a_failure_in_one_tagged_request_is_not_retried_by_another_requests_call() -> None:
    PRICES.set_price("acme-large", input=2, output=8)
    tracker = Tracker()
    for rid, end in (("r1", "boom"), ("r2", "finish")):
        span = Span("request", "session", tags={"request_id": rid})
        _call(tracker, "acme-large", span, input=100, output=10, end=end)
    assert _kind(compute_hints(tracker.stats()), "retry") == []
    again = Span("request", "session", tags={"request_id": "r1"})
    _call(tracker, "acme-large", again, input=100, output=10)  # r1's own retry
    [hint] = _kind(compute_hints(tracker.stats()), "retry")
    assert hint.span == "request"


@pytest.mark.parametrize(("model", "cheaper"), [
    ("openai/gpt-4o", "openai/gpt-4o-mini"),  # a gateway's vendor prefix kept: the name it takes
    ("anthropic/claude-sonnet-4.5", "anthropic/claude-haiku-4.5"),  # OpenRouter's dotted versions
])
def test_a_gateways_downgrade_names_the_model_as_that_gateway_takes_it(model: str, cheaper: str) -> None:
    tracker = Tracker()
    call = Call(tracker, model, provider="openrouter", parent=Span("a", "function"))
    call.set_usage(input_tokens=1000, output_tokens=100)
    call.finish()
    [hint] = _kind(compute_hints(tracker.stats()), "downgrade")
    assert hint.text.startswith(f"a, {model}: {cheaper} would save ")
    assert hint.saving_femto > 0
