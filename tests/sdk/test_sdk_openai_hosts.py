"""An openai client pointed at another host (Groq, Together, OpenRouter, Z.ai, ...) is recorded as that
host's provider and priced at that host's listing, as genai-prices prices the same call by its API URL;
api.openai.com stays "openai", an Azure client "azure", and a host no price source knows (a local
server, a proxy) keeps the model's own listed price, or none. The hosts are `httpx.MockTransport`s."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from sdk_helpers import MESSAGES
from test_sdk_openai_chat import only_record

import tokenspy

GROQ = "https://api.groq.com/openai/v1"
TOGETHER = "https://api.together.xyz/v1"
OPENROUTER = "https://openrouter.ai/api/v1"
ZAI = "https://api.z.ai/api/paas/v4"
OPENAI = "https://api.openai.com/v1"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
         "prompt_tokens_details": {"cached_tokens": 400}}


def _body(model: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": USAGE}


def _stream(model: str) -> bytes:
    chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]},
              {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
               "usage": USAGE}]
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


def _handler(served: str) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_stream(served))
        return httpx.Response(200, json=_body(served))

    return handle


def _client(base_url: str, served: str) -> openai.OpenAI:
    return tokenspy.observe(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(_handler(served)))))


def _listed(model: str, base_url: str) -> tuple[str, Decimal]:
    """genai-prices' own answer for the call: the provider its API URL names, and the exact cost there."""
    price = calc_price(GenaiUsage(input_tokens=1000, cache_read_tokens=400, output_tokens=300), model,
                       provider_api_url=base_url)
    return price.provider.id, price.total_price


@pytest.mark.parametrize(("base_url", "model", "provider"), [
    (GROQ, "openai/gpt-oss-120b", "groq"),  # OpenAI lists the open model too, cheaper: not Groq's bill
    (TOGETHER, "openai/gpt-oss-120b", "together"),
    (GROQ, "llama-3.3-70b-versatile", "groq"),  # only hosts list these: unpriced without the host
    (TOGETHER, "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together"),
    (OPENROUTER, "meta-llama/llama-3.3-70b-instruct", "openrouter"),
    (ZAI, "glm-4.5", "zai"),
    (OPENAI, "gpt-4o", "openai"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_hosts_model_is_priced_at_that_hosts_listing(base_url: str, model: str, provider: str,
                                                      stream: bool) -> None:
    client = _client(base_url, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no price known" warning
        response = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        if stream:
            assert [chunk.choices[0].delta.content for chunk in response] == ["Hi"]
    record = only_record()
    assert (record.provider, record.input_tokens, record.cached_input_tokens, record.output_tokens) == (
        provider, 1000, 400, 300)
    assert (provider, record.cost) == _listed(model, base_url)


def test_open_model_on_groq_is_not_priced_at_openais_listing() -> None:
    _client(GROQ, "openai/gpt-oss-120b").chat.completions.create(model="openai/gpt-oss-120b", messages=MESSAGES)
    # Groq: $0.15 in, $0.075 cached, $0.60 out per million tokens; OpenAI's own listing is cheaper.
    assert only_record().cost == Decimal("0.0003") == (600 * Decimal("0.15") + 400 * Decimal("0.075")
                                                       + 300 * Decimal("0.6")) / 1_000_000


def test_a_gateways_served_model_is_priced_at_the_gateways_listing_not_its_makers() -> None:
    # OpenRouter answers with the exact model it routed to; both names are OpenRouter's own listings.
    client = _client(OPENROUTER, "deepseek/deepseek-chat-v3-0324")
    client.chat.completions.create(model="deepseek/deepseek-chat", messages=MESSAGES)
    record = only_record()
    assert (record.provider, record.model, record.request_model) == (
        "openrouter", "deepseek/deepseek-chat-v3-0324", "deepseek/deepseek-chat")
    assert ("openrouter", record.cost) == _listed("deepseek/deepseek-chat-v3-0324", OPENROUTER)
    direct = calc_price(GenaiUsage(input_tokens=1000, cache_read_tokens=400, output_tokens=300), "deepseek-chat",
                        provider_id="deepseek")
    assert record.cost != direct.total_price


async def test_an_async_client_names_its_host_too() -> None:
    client = tokenspy.observe(openai.AsyncOpenAI(
        base_url=GROQ, api_key="test", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(_handler("llama-3.3-70b-versatile")))))
    await client.chat.completions.create(model="llama-3.3-70b-versatile", messages=MESSAGES)
    record = only_record()
    assert (record.provider, record.cost) == _listed("llama-3.3-70b-versatile", GROQ)


def test_an_azure_client_stays_azure() -> None:
    transport = httpx.MockTransport(_handler("gpt-4o-2024-11-20"))
    client = tokenspy.observe(openai.AzureOpenAI(
        azure_endpoint="https://example.openai.azure.com", api_version="2024-10-21", api_key="test",
        max_retries=0, http_client=httpx.Client(transport=transport)))
    client.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert only_record().provider == "azure"


def test_a_base_url_changed_on_the_client_is_followed() -> None:
    client = _client(GROQ, "openai/gpt-oss-120b")
    client.chat.completions.create(model="openai/gpt-oss-120b", messages=MESSAGES)
    client.base_url = TOGETHER  # type: ignore[assignment]  # (the SDK's setter takes a str)
    client.chat.completions.create(model="openai/gpt-oss-120b", messages=MESSAGES)
    assert [(record.provider, record.cost) for record in tokenspy.calls()] == [
        _listed("openai/gpt-oss-120b", GROQ), _listed("openai/gpt-oss-120b", TOGETHER)]


@pytest.mark.parametrize("base_url", ["http://localhost:11434/v1", "http://litellm-proxy:4000"])
def test_an_unknown_host_keeps_the_models_listed_price_or_none(base_url: str) -> None:
    # A local server or a proxy: the model's own listed price by its name, else None, warned once.
    _client(base_url, "gpt-4o-mini").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    record = only_record()
    assert (record.provider, record.cost) == ("openai", _listed("gpt-4o-mini", OPENAI)[1])

    tokenspy.reset()
    model = f"llama3.2-unlisted-{base_url.rsplit(':', 1)[-1].split('/')[0]}"
    client = _client(base_url, model)
    with pytest.warns(UserWarning, match="no price known") as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert len(caught) == 1
    assert [record.cost for record in tokenspy.calls()] == [None, None]

    tokenspy.set_price(model, input=1, output=2)
    client.chat.completions.create(model=model, messages=MESSAGES)
    assert tokenspy.calls()[-1].cost == (1000 * 1 + 300 * 2) / Decimal(1_000_000)


@pytest.mark.parametrize("stream", [False, True])
def test_a_langchain_model_over_a_hosts_client_is_that_hosts_call(stream: bool) -> None:
    # ChatOpenAI names "openai" whatever its base_url: the SDK layer under it knows the host.
    from langchain_openai import ChatOpenAI

    from tokenspy.langchain import TokenSpyHandler

    client = _client(GROQ, "openai/gpt-oss-120b")
    llm = ChatOpenAI(model="openai/gpt-oss-120b", base_url=GROQ, api_key="test", max_retries=0,  # type: ignore[arg-type]
                     http_client=client._client)
    config: Any = {"callbacks": [TokenSpyHandler()]}
    if stream:
        assert "".join(str(chunk.content) for chunk in llm.stream("hi", config=config)) == "Hi"
    else:
        llm.invoke("hi", config=config)
    record = only_record()
    assert (record.provider, record.cost) == ("groq", Decimal("0.0003")) == _listed("openai/gpt-oss-120b", GROQ)


def test_an_anthropic_client_on_another_hosts_anthropic_api_is_that_hosts_call() -> None:
    import anthropic
    import httpx2

    url = "https://api.deepseek.com/anthropic"
    body = {"id": "m", "type": "message", "role": "assistant", "model": "deepseek-chat", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Hi"}], "usage": {"input_tokens": 1000, "output_tokens": 300}}
    client = tokenspy.observe(anthropic.Anthropic(
        base_url=url, api_key="test", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=body)))))
    client.messages.create(model="deepseek-chat", max_tokens=10, messages=MESSAGES)
    record = only_record()
    price = calc_price(GenaiUsage(input_tokens=1000, output_tokens=300), "deepseek-chat", provider_api_url=url)
    assert (record.provider, record.cost) == ("deepseek", price.total_price)
