"""The fake answers with the service tier (and Anthropic speed) it was asked for, as the real APIs do, so
a user's test of a flex or priority call through it sees that tier's prices in tokenspy."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import tokenspy
from tokenspy.testing import DEFAULT_REPLY, FakeProvider
from tokenspy_core.tokenizer import count_message_tokens, count_tokens

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# gpt-5 per million input / output tokens at each tier (genai-prices, written out)
GPT_5 = {"default": (Decimal("1.25"), Decimal("10")), "flex": (Decimal("0.625"), Decimal("5")),
         "priority": (Decimal("2.50"), Decimal("20"))}
# claude-opus-4-8 per million input / output tokens, standard and fast mode (genai-prices, written out)
OPUS_4_8 = {"standard": (Decimal("5"), Decimal("25")), "fast": (Decimal("10"), Decimal("50"))}


@pytest.fixture
def oai(fake_provider: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_provider.openai_base_url, api_key="test", max_retries=0,
                       http_client=openai.DefaultHttpxClient(verify=False)) as client:
        yield client


@pytest.fixture
def claude(fake_provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_provider.anthropic_base_url, api_key="test", max_retries=0,
                             http_client=anthropic.DefaultHttpxClient(verify=False)) as client:
        yield client


@pytest.mark.parametrize(("asked", "served"), [
    (None, "default"), ("auto", "default"), ("default", "default"), ("flex", "flex"), ("priority", "priority"),
    ("fast", "priority"),  # openai documents fast mode as answered `priority`
    ("scale", "scale"),
])
def test_openai_answers_name_the_tier_asked_for_on_every_chunk_and_response(
        oai: openai.OpenAI, asked: str | None, served: str) -> None:
    tier: Any = {} if asked is None else {"service_tier": asked}
    assert oai.chat.completions.create(model="gpt-5", messages=QUESTION, **tier).service_tier == served
    chunks = list(oai.chat.completions.create(model="gpt-5", messages=QUESTION, stream=True,
                                              stream_options={"include_usage": True}, **tier))
    assert len(chunks) == 9 and {c.service_tier for c in chunks} == {served}  # the usage chunk too
    assert oai.responses.create(model="gpt-5", input="Hi", **tier).service_tier == served
    events = list(oai.responses.create(model="gpt-5", input="Hi", stream=True, **tier))
    responses = [e.response for e in events if e.type in ("response.created", "response.in_progress",
                                                          "response.completed")]
    assert [r.service_tier for r in responses] == [served] * 3


def test_an_unknown_openai_tier_is_a_400_naming_it(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'flx'"):
        oai.chat.completions.create(model="gpt-5", messages=QUESTION, service_tier="flx")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="'flx'"):
        oai.responses.create(model="gpt-5", input="Hi", service_tier="flx")  # type: ignore[arg-type]


@pytest.mark.parametrize("tier", ["flex", "priority", "default"])
@pytest.mark.parametrize("api", ["chat", "chat-stream", "responses", "responses-stream"])
def test_a_call_through_the_fake_is_priced_at_the_tier_it_asked_for(
        oai: openai.OpenAI, api: str, tier: str) -> None:
    client = tokenspy.observe(oai)
    stream = api.endswith("-stream")
    if api.startswith("chat"):
        answer: Any = client.chat.completions.create(model="gpt-5", messages=QUESTION, stream=stream,
                                                     service_tier=tier)  # type: ignore[arg-type]
    else:
        answer = client.responses.create(model="gpt-5", input=QUESTION, stream=stream,
                                         service_tier=tier)  # type: ignore[arg-type]
    if stream:
        list(answer)
    [record] = tokenspy.calls()
    prompt, output = count_message_tokens(QUESTION, "gpt-5"), count_tokens(DEFAULT_REPLY, "gpt-5")
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (prompt, output, "provider")
    assert (prompt, output) == (14, 7)
    input_rate, output_rate = GPT_5[tier]
    assert record.cost == (prompt * input_rate + output * output_rate) / 1_000_000
    assert record.cost == {"flex": Decimal("0.00004375"), "priority": Decimal("0.000175"),
                           "default": Decimal("0.0000875")}[tier]


@pytest.mark.parametrize("tier", [None, "auto", "standard_only"])
def test_anthropic_usage_says_standard_for_every_tier_it_accepts(
        claude: anthropic.Anthropic, tier: str | None) -> None:
    # "auto" reaches priority capacity only with a Priority Tier commitment, which the fake does not model.
    extra: Any = {} if tier is None else {"service_tier": tier}
    m = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=QUESTION, **extra)
    assert m.usage.service_tier == "standard" and m.usage.speed is None
    with pytest.raises(anthropic.BadRequestError, match="'priority'"):
        claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=QUESTION,
                               service_tier="priority")  # type: ignore[arg-type]


@pytest.mark.parametrize("speed", ["fast", "standard"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_fast_mode_through_the_fake_is_priced_at_fast_rates(
        fake_provider: FakeProvider, claude: anthropic.Anthropic, speed: str, stream: bool) -> None:
    client = tokenspy.observe(claude)
    answer: Any = client.messages.create(model="claude-opus-4-8", max_tokens=64, messages=QUESTION,
                                         speed=speed, stream=stream)  # type: ignore[arg-type]
    if stream:
        list(answer)
    else:
        assert answer.usage.speed == speed
    assert fake_provider.requests[0]["usage"]["speed"] == speed
    [record] = tokenspy.calls()
    prompt, output = count_message_tokens(QUESTION, "claude-opus-4-8"), count_tokens(DEFAULT_REPLY, "claude-opus-4-8")
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (prompt, output, "provider")
    input_rate, output_rate = OPUS_4_8[speed]
    assert record.cost == (prompt * input_rate + output * output_rate) / 1_000_000
    with pytest.raises(anthropic.BadRequestError, match="'quick'"):
        claude.messages.create(model="claude-opus-4-8", max_tokens=64, messages=QUESTION,
                               speed="quick")  # type: ignore[arg-type]
