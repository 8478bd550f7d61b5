"""Prices resolve offline, per model, and apply exactly."""

from __future__ import annotations

import calendar
from decimal import Decimal
from types import SimpleNamespace

import pytest

from tokenspy_core import PriceBook, Usage
from tokenspy_core.pricing import usd


def test_dated_snapshot_and_provider_prefix_resolve_to_the_model() -> None:
    book = PriceBook()
    base = book.rates_for("gpt-4o", "openai")
    assert base is not None
    assert book.rates_for("gpt-4o-2024-08-06", "openai") == base
    azure = book.rates_for("azure/gpt-4o")
    assert azure is not None and azure.base == base.base


def test_cache_reads_writes_and_one_hour_writes_have_their_own_rates() -> None:
    rates = PriceBook().rates_for("claude-3-5-sonnet-20241022", "anthropic")
    assert rates is not None
    u = Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=200, cache_write_tokens=300,
              cache_write_1h_tokens=100)
    # 500 uncached * 3 + 200 * 0.30 + 200 * 3.75 + 100 * 6 + 100 * 15  (USD per million)
    assert usd(rates.cost(u)) == Decimal("0.00441")


def test_long_context_tier_applies_to_every_token_past_the_threshold() -> None:
    rates = PriceBook().rates_for("claude-sonnet-4-5", "anthropic")
    assert rates is not None
    assert usd(rates.cost(Usage(200_000, 0))) == Decimal("0.6")
    assert usd(rates.cost(Usage(200_001, 0))) == Decimal("1.200006")


def test_genai_prices_global_snapshot_changes_do_not_move_our_numbers() -> None:
    from genai_prices import data_snapshot

    book = PriceBook()
    before = book.rates_for("gpt-4o", "openai")
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        assert PriceBook().rates_for("gpt-4o", "openai") == before
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_user_override_wins_also_for_dated_names() -> None:
    book = PriceBook()
    book.set_price("gpt-4o", input=1, output=1, cached_input="0.5")
    rates = book.rates_for("gpt-4o-2024-11-20", "openai")
    assert rates is not None and rates.source == "user"
    assert usd(rates.cost(Usage(10, 0, 4))) == Decimal("0.000008")


def test_anthropic_fast_mode_is_priced_at_its_own_rates() -> None:
    from tokenspy_core import Tracker
    from tokenspy_core.call import Call

    tracker = Tracker()
    book = PriceBook()
    standard = book.rates_for("claude-opus-4-8", "anthropic")
    fast = book.rates_for("claude-opus-4-8", "anthropic", None, True, "fast")
    assert standard is not None and fast is not None
    assert usd(standard.cost(Usage(10_000, 2_000))) == Decimal("0.1")  # $5 / $25 per million
    assert usd(fast.cost(Usage(10_000, 2_000))) == Decimal("0.2")  # $10 / $50 per million
    call = Call(tracker, "claude-opus-4-8", provider="anthropic")
    call.set_speed("fast")
    call.set_usage(input_tokens=10_000, output_tokens=2_000)
    record = call.finish()
    assert record is not None and record.cost == Decimal("0.2")


# -- prices genai-prices dates (a new price from a day on, off-peak hours) ------------------------------------
def _epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, 0)))


def test_a_cached_price_gives_way_at_its_dated_price_change() -> None:
    book = PriceBook()
    million_each = Usage(1_000_000, 1_000_000)

    def cost_at(at: float) -> Decimal:
        rates = book.rates_for("gemini-3.6-flash", "google", at=at)
        assert rates is not None
        return usd(rates.cost(million_each))

    assert cost_at(_epoch(2026, 12, 31, 23, 59)) == Decimal("4.5")  # $0.75 / $3.75 per million
    assert cost_at(_epoch(2027, 1, 1)) == Decimal("9")  # $1.50 / $7.50 from 2027-01-01 (UTC)
    # A call made before the change and priced after it (a long stream): the price of its time.
    assert cost_at(_epoch(2026, 12, 31, 23, 59)) == Decimal("4.5")
    assert cost_at(_epoch(2027, 3, 1)) == Decimal("9")


def test_off_peak_hours_are_priced_at_their_own_rates_every_day() -> None:
    book = PriceBook()
    million_each = Usage(1_000_000, 1_000_000)
    costs = []
    for day in (23, 24):
        for hour in (12, 20):
            rates = book.rates_for("deepseek-chat", "deepseek", at=_epoch(2026, 11, day, hour))
            assert rates is not None
            costs.append(usd(rates.cost(million_each)))
    assert costs == [Decimal("1.37"), Decimal("0.685")] * 2  # 00:30-16:30 UTC standard, else half


def test_a_long_running_process_prices_a_call_after_a_dated_change_at_the_new_price(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenspy
    from tokenspy_core import call

    now = [_epoch(2026, 12, 31, 23, 59)]
    monkeypatch.setattr(call, "time", SimpleNamespace(time=lambda: now[0]))  # the calls' wall clock
    first = tokenspy.record("gemini-3.6-flash", input_tokens=1_000_000, output_tokens=1_000_000, provider="google")
    now[0] = _epoch(2027, 1, 2)
    second = tokenspy.record("gemini-3.6-flash", input_tokens=1_000_000, output_tokens=1_000_000, provider="google")
    assert first is not None and second is not None
    assert (first.cost, second.cost) == (Decimal("4.5"), Decimal("9"))
