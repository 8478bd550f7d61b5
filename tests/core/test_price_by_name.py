"""A model no provider's name pattern claims is priced by its exact name: the maker's price first,
a host's only when the hosts listing it agree; a miss is looked up once."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import pytest

import tokenspy
from tokenspy_core import PriceBook, Usage
from tokenspy_core.pricing import usd


def _cost_of_a_million_input_tokens(model: str, provider: str | None = None) -> float | None:
    record = tokenspy.record(model, input_tokens=1_000_000, output_tokens=0, provider=provider)
    assert record is not None
    return record.cost_usd


@pytest.mark.parametrize(
    ("model", "usd_per_mtok"),
    [
        ("text-embedding-3-small", 0.02),
        ("text-embedding-3-large", 0.13),
        ("text-embedding-ada-002", 0.1),
        ("chatgpt-4o-latest", 5.0),
        ("codex-mini", 1.5),
        ("codex-mini-latest", 1.5),  # an exact alias in the maker's listing
        ("davinci-002", 2.0),
    ],
)
def test_a_name_only_its_makers_list_has_is_priced_without_provider(model: str, usd_per_mtok: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no price known" warning either
        assert _cost_of_a_million_input_tokens(model) == usd_per_mtok
    assert _cost_of_a_million_input_tokens(model, "openai") == usd_per_mtok


def test_a_name_its_maker_and_a_host_list_at_different_prices_gets_the_makers() -> None:
    # "davinci": OpenAI's legacy completion model at $20, and an Azure listing of the same name at $2.
    assert _cost_of_a_million_input_tokens("davinci") == 20.0
    assert _cost_of_a_million_input_tokens("ada") == 0.4  # Azure: $0.1


def test_hosts_that_agree_price_the_name() -> None:
    assert _cost_of_a_million_input_tokens("command") == 1.0  # Cohere and OpenRouter, both $1 / $2


def test_hosts_that_disagree_leave_the_name_unpriced_and_the_warning_names_them() -> None:
    model = "meta-llama/llama-3.1-8b-instruct"  # eight hosts, $0.02 to $0.11 per million input tokens
    with pytest.warns(UserWarning, match="priced differently by huggingface_cerebras, .* and 3 more") as caught:
        assert _cost_of_a_million_input_tokens(model) is None
    assert "provider=" in str(caught[0].message)
    assert _cost_of_a_million_input_tokens(model, "openrouter") == 0.05


def test_a_named_provider_is_not_billed_at_another_hosts_price() -> None:
    # Only OVHcloud lists this name; a call served by a local server says so with provider=.
    assert _cost_of_a_million_input_tokens("llama-3.1-8b-instruct") == 0.11
    with pytest.warns(UserWarning, match="no price known"):
        assert _cost_of_a_million_input_tokens("llama-3.1-8b-instruct", "ollama") is None


def test_a_name_is_matched_exactly_not_by_another_providers_loose_rules() -> None:
    # Bedrock's id for Claude Sonnet 4.5. Vertex's Claude listing matches any name containing
    # "claude-sonnet-4-5" and charges double past 200k input tokens: it must not price Bedrock's name.
    book = PriceBook()
    model = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    rates, bedrock = book.rates_for(model, warn=False), book.rates_for(model, "bedrock", warn=False)
    vertex = book.rates_for("claude-sonnet-4-5", "google", warn=False)
    assert rates is not None and bedrock is not None and vertex is not None
    assert usd(rates.cost(Usage(300_000, 0))) == usd(bedrock.cost(Usage(300_000, 0))) == Decimal("0.9")
    assert usd(vertex.cost(Usage(300_000, 0))) == Decimal("1.8")


def test_the_name_index_is_built_once_and_a_miss_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspy_core import pricing

    built: list[int] = []
    original = pricing._exact_names

    def counting(providers: list[Any]) -> dict[str, tuple[tuple[str, Any], ...]]:
        built.append(len(providers))
        return original(providers)

    monkeypatch.setattr(pricing, "_exact_names", counting)
    book = PriceBook()
    looked_up: list[str] = []
    listed_as = book._listed_as

    def counting_lookup(model: str) -> tuple[tuple[str, Any], ...]:
        looked_up.append(model)
        return listed_as(model)

    monkeypatch.setattr(book, "_listed_as", counting_lookup)
    for _ in range(3):
        assert book.rates_for("no-such-model", warn=False) is None
        assert book.rates_for("text-embedding-3-small", warn=False) is not None
    assert built == [len(book._snapshot.providers)]
    assert looked_up == ["no-such-model", "text-embedding-3-small"]
