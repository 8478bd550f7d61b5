"""The pytest plugin on a small support bot: `pytest --tokenspy examples/test_support_bot.py`.

Runs offline against the fake provider (the `fake_provider` fixture); one test fails on purpose, to show
a per-test budget (`@pytest.mark.tokenspy(budget_usd=...)`) at work. See docs/pytest.md.
"""

import pytest
from openai import OpenAI

import tokenspy


@pytest.fixture
def client(fake_provider):
    return OpenAI(base_url=fake_provider.openai_base_url, api_key="test", max_retries=0)


@tokenspy.profile
def answer(client, question, model="gpt-4o"):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
    return r.choices[0].message.content


def test_answers_in_one_call(client, tokenspy_session):
    answer(client, "Where is my order #1234?")
    assert tokenspy_session.calls == 1


def test_small_model_is_enough(client):
    answer(client, "Say hello", model="gpt-4o-mini")


def test_stream_stopped_early(client):
    stream = client.chat.completions.create(
        model="gpt-4o", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a long story about shipping delays."}])
    for _ in stream:
        break
    stream.close()


@pytest.mark.tokenspy(budget_usd=0.0001)
def test_summary_stays_cheap(client):
    answer(client, "Summarize: " + "the parcel was late again. " * 40)


def test_no_llm():
    assert True
