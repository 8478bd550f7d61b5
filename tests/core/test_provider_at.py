"""`provider_at`: the provider an API base URL names, matched as genai-prices matches
`calc_price(provider_api_url=...)`, resolved once per URL; a host none claims is None."""

from __future__ import annotations

import pytest
from genai_prices.data import providers
from genai_prices.data_snapshot import DataSnapshot

from tokenspy_core import pricing
from tokenspy_core.pricing import provider_at

_GENAI = DataSnapshot(providers=providers, from_auto_update=False)  # what `calc_price(provider_api_url=)` uses


@pytest.mark.parametrize(("url", "provider"), [
    ("https://api.openai.com/v1/", "openai"),
    ("https://api.groq.com/openai/v1/", "groq"),
    ("https://api.together.xyz/v1/", "together"),
    ("https://openrouter.ai/api/v1/", "openrouter"),
    ("https://api.z.ai/api/paas/v4/", "zai"),
    ("https://api.deepseek.com/", "deepseek"),
    ("https://api.x.ai/v1/", "x-ai"),
    ("https://generativelanguage.googleapis.com/v1beta/openai/", "google"),
    ("https://api.mistral.ai/v1/", "mistral"),
    ("https://api.fireworks.ai/inference/v1/", "fireworks"),
    ("https://my-resource.openai.azure.com/openai/v1/", "azure"),  # Azure's v1 API through a plain client
])
def test_a_hosts_url_names_the_provider_genai_prices_prices_it_by(url: str, provider: str) -> None:
    assert provider_at(url) == provider == _GENAI.find_provider(None, None, url).id


@pytest.mark.parametrize("url", ["http://localhost:11434/v1/", "http://127.0.0.1:8000/v1/", "http://litellm:4000/",
                                 "https://gateway.example.com/v1/", "https://router.huggingface.co/v1/"])
def test_a_host_no_provider_claims_is_none(url: str) -> None:
    assert provider_at(url) is None
    assert provider_at(url) is None  # the miss is remembered as one
    with pytest.raises(LookupError):
        _GENAI.find_provider(None, None, url)


def test_urls_are_remembered_within_a_bound() -> None:
    # A client built per request with a URL of its own (an account id in the path) must not grow memory.
    for account in range(3 * pricing._MAX_HOSTS):
        assert provider_at(f"https://gateway.example.com/accounts/{account}/v1/") is None
    assert len(pricing._HOSTS) <= pricing._MAX_HOSTS
    assert provider_at("https://api.groq.com/openai/v1/") == "groq"


def test_a_hosts_listing_wins_over_the_name_split_into_its_makers() -> None:
    # "openai/gpt-oss-120b" split at its "/" is OpenAI's "gpt-oss-120b", listed cheaper than Groq's.
    book = pricing.PriceBook()
    groq = book.rates_for("openai/gpt-oss-120b", provider_at("https://api.groq.com/openai/v1/"))
    assert groq is not None
    assert (groq.base.input, groq.base.cache_read, groq.base.output) == (150_000_000, 75_000_000, 600_000_000)
    assert book.rates_for("openai/gpt-oss-120b", "openai") != groq


@pytest.mark.parametrize("url", ["https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/",
                                 "https://aiplatform.googleapis.com/v1/projects/p/locations/global/endpoints/openapi"])
def test_vertex_ai_is_told_from_the_gemini_api_and_priced_as_google(url: str) -> None:
    # genai-prices names both "google"; OpenTelemetry tells Vertex AI (gcp.vertex_ai) from the Gemini API.
    assert provider_at(url) == "google_vertexai"
    assert _GENAI.find_provider(None, None, url).id == "google"
    book = pricing.PriceBook()
    assert book.rates_for("gemini-2.0-flash", "google_vertexai") == book.rates_for("gemini-2.0-flash", "google")
